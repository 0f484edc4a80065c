#!/bin/bash
# Score a training run's checkpoints with the evaluation harness (python -m backpack_dist.eval, docs/eval.md):
# one results file per checkpoint, RUN_DIR/eval/step_XXXXXXXX.json, then a table of them all.
#   RUN_DIR=runs/backpack-small sbatch slurm/eval.sh
#   RUN_DIR=runs/backpack-small STEPS=latest TASKS=lambada,wikitext sbatch slurm/eval.sh
# Checkpoints that already have a results file are skipped, so a requeued or rerun job carries on.
#SBATCH --job-name=eval
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=08:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300          # 5 minutes before the time limit: stop and requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}  # sbatch runs a copy: find the clone
[[ -f $REPO/slurm/lib/common.sh ]] || {
    echo "error: $REPO is not a backpack-dist clone; submit from its root or set REPO=/path/to/backpack-dist" >&2
    exit 2
}
source "$REPO/slurm/lib/common.sh"

RUN_DIR=${RUN_DIR:-}                                 # the run to score (required)
STEPS=${STEPS:-all}                                  # all | latest | a list of steps, e.g. 50000,100000
TASKS=${TASKS:-owt,lambada,wikitext,blimp}           # add similarity with EVAL_ARGS="--similarity_dir DIR"
DATA_DIR=${DATA_DIR:-$REPO/data/openwebtext}         # data-prep output whose val split the owt task scores
GPUS=${GPUS:-1}                                      # >1: torchrun shards each checkpoint's scoring over GPUs
EVAL_ARGS=${EVAL_ARGS:-}                             # more flags for python -m backpack_dist.eval
FORCE=${FORCE:-0}                                    # 1: rescore checkpoints that have results
read -r -a eval_args <<<"$EVAL_ARGS"

[[ -n $RUN_DIR ]] || die "set RUN_DIR to the training run to score, e.g. RUN_DIR=runs/backpack-small sbatch slurm/eval.sh"
[[ -d $RUN_DIR/checkpoints ]] || die "RUN_DIR=$RUN_DIR has no checkpoints/ folder; is it a training run directory?"
[[ $TASKS == *owt* ]] && eval_args=(--owt_val_dir "$DATA_DIR" "${eval_args[@]}")

complete=()  # step folders with a COMPLETE marker, oldest first (not the step_N_universal copies)
for dir in "$RUN_DIR"/checkpoints/step_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
    [[ -f $dir/COMPLETE ]] && complete+=("$dir")
done
((${#complete[@]})) || die "RUN_DIR=$RUN_DIR has no complete checkpoint yet"
case $STEPS in
    all) chosen=("${complete[@]}") ;;
    latest) chosen=("${complete[-1]}") ;;
    *)
        chosen=()
        for step in ${STEPS//,/ }; do
            dir=$(printf '%s/checkpoints/step_%08d' "$RUN_DIR" "$step")
            [[ -f $dir/COMPLETE ]] || die "STEPS: no complete checkpoint for step $step in $RUN_DIR/checkpoints"
            chosen+=("$dir")
        done
        ;;
esac

if ((GPUS > 1)); then
    launch=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$GPUS")
else
    launch=("$PYTHON")
fi
stopped=0
child=
trap 'stopped=1; log "SIGUSR1: stopping to requeue"; [[ -n $child ]] && kill -TERM "$child"' USR1
mkdir -p "$RUN_DIR/eval"
for dir in "${chosen[@]}"; do
    out=$RUN_DIR/eval/$(basename "$dir").json
    if [[ -f $out && $FORCE != 1 ]]; then
        log "$out exists; skipping"
        continue
    fi
    log "scoring $dir -> $out"
    "${launch[@]}" -m backpack_dist.eval --checkpoint "$dir" --tasks "$TASKS" --out "$out" --progress False \
        "${eval_args[@]}" &
    child=$!
    wait_for "$child"
    status=$?
    child=
    if ((stopped)); then
        scontrol requeue "$SLURM_JOB_ID" || die "scontrol requeue failed; resubmit the same command to continue"
        exit 0
    fi
    ((status == 0)) || die "scoring $dir failed (exit $status); see the messages above"
done
"$PYTHON" -m backpack_dist.eval table "$RUN_DIR"/eval/step_*.json
