#!/bin/bash
# Train Backpack-Mini on OpenWebText (FAMILY=transformer: the Transformer-Mini baseline).
#   sbatch slurm/train_mini.sh                          # from the repository root
#   FAMILY=transformer sbatch slurm/train_mini.sh
#   CONFIG=my-recipe.toml sbatch slurm/train_mini.sh        # recipe: configs/$FAMILY-mini.toml by default
#   RUN_DIR=runs/x DATA_DIR=data/owt EXTRA_ARGS="--max_steps 50000" sbatch -N 4 slurm/train_mini.sh
# Settings (environment variables) and what happens on preemption: see lib/train_job.sh and docs/cluster.md.
#SBATCH --job-name=train-mini
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1          # one launcher per node; it starts GPUS_PER_NODE training processes
#SBATCH --gres=gpu:8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@600          # 10 minutes before the time limit: save, exit, requeue
#SBATCH --open-mode=append           # one log across requeues
#SBATCH --output=%x-%j.out

SIZE=mini
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}  # sbatch runs a copy: find the clone
[[ -f $REPO/slurm/lib/train_job.sh ]] || {
    echo "error: $REPO is not a backpack-dist clone; submit from its root or set REPO=/path/to/backpack-dist" >&2
    exit 2
}
source "$REPO/slurm/lib/common.sh"
source "$REPO/slurm/lib/train_job.sh"
