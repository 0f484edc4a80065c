#!/bin/bash
# The study's comparison (the last job of slurm/reproduce_paper.sh): the paper's Table 2 beside ours
# for the given results files (python -m backpack_dist.eval table) and the validation loss of their
# runs against tokens seen (python -m backpack_dist.plot), into OUT_DIR/table2.md and OUT_DIR/val_loss.png.
#   OUT_DIR=runs sbatch slurm/table.sh runs/backpack-micro/eval/step_00100000.json runs/transformer-micro/eval/...
#SBATCH --job-name=table2
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G
#SBATCH --time=00:30:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}  # sbatch runs a copy: find the clone
[[ -f $REPO/slurm/lib/common.sh ]] || {
    echo "error: $REPO is not a backpack-dist clone; submit from its root or set REPO=/path/to/backpack-dist" >&2
    exit 2
}
source "$REPO/slurm/lib/common.sh"

OUT_DIR=${OUT_DIR:-$REPO/runs}  # where table2.md and val_loss.png go
(($#)) || die "give the results files: OUT_DIR=runs sbatch slurm/table.sh RUN/eval/step_N.json ..."
runs=()
for results in "$@"; do
    [[ -f $results ]] || die "results file $results not found; did the eval of its run succeed?"
    runs+=("$(dirname "$(dirname "$results")")")  # RUN/eval/step_N.json -> RUN
done
mkdir -p "$OUT_DIR" || die "cannot create OUT_DIR=$OUT_DIR"

# Written next to its place and moved there when complete: a table file is never half-written.
"$PYTHON" -m backpack_dist.eval table "$@" >"$OUT_DIR/.table2.md.tmp" || {
    rm -f "$OUT_DIR/.table2.md.tmp"
    die "the table failed; see above"
}
mv "$OUT_DIR/.table2.md.tmp" "$OUT_DIR/table2.md"
cat "$OUT_DIR/table2.md"
echo
"$PYTHON" -m backpack_dist.plot "${runs[@]}" --out "$OUT_DIR/val_loss.png" || die "the plot failed; see above"
log "wrote $OUT_DIR/table2.md and $OUT_DIR/val_loss.png"
