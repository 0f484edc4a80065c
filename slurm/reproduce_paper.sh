#!/bin/bash
# The paper's whole study in one command: data prep when the MDS data is missing, the six trainings
# with the paper's recipe, an eval of each final checkpoint and the Table-2 comparison, submitted as
# SLURM jobs with afterok dependencies (python -m backpack_dist.reproduce; docs/cluster.md).
#   bash slurm/reproduce_paper.sh --dry_run                  # the plan, its cost; nothing submitted
#   bash slurm/reproduce_paper.sh                            # submit it
#   bash slurm/reproduce_paper.sh --only backpack-micro,transformer-micro
#   bash slurm/reproduce_paper.sh --ablation                 # + Backpack-Mini with k = 1, 4, 16, 64 senses
#   SBATCH_ARGS="-p gpu -A proj" EXTRA_ARGS="--wandb online" bash slurm/reproduce_paper.sh
# Run it with bash (it submits jobs; it is not a job itself), from anywhere.
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
[[ -f $REPO/slurm/lib/common.sh ]] || {
    echo "error: $REPO is not a backpack-dist clone; set REPO=/path/to/backpack-dist" >&2
    exit 2
}
source "$REPO/slurm/lib/common.sh"
[[ -z ${SLURM_JOB_ID:-} ]] || die "run this with bash on a login node, not with sbatch: it submits the study's jobs"
PYTHON=$(command -v "$PYTHON")  # the jobs run this very interpreter, whatever their PATH
export REPO PYTHON
exec "$PYTHON" -m backpack_dist.reproduce "$@"
