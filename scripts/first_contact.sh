#!/usr/bin/env bash
# First GPU contact: install the carried wheels offline, then every first-contact stage into DIR
# (default first_contact/), the whole log teed to DIR/first_contact.log. See docs/benchmarks.md.
#   bash scripts/first_contact.sh [DIR] [--dry_run]
set -uo pipefail
out=${1:-first_contact}
shift || true
mkdir -p "$out"
if [ -d .whl ] && ! python3 -c "import deepspeed, streaming" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tee "$out/install.log" || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m backpack_dist.bench --first_contact --out "$out" "$@" 2>&1 | tee "$out/first_contact.log"
