#!/bin/bash
# Tokenize OpenWebText into the MDS shards that training reads (python -m data_prep, docs/data_prep.md).
#   bash slurm/prep_owt.sh      # submits an array of NUM_SHARDS jobs and a merge job that starts when all succeeded
#   sbatch slurm/prep_owt.sh    # or one job that prepares everything, then merges
#   sbatch --array=0-15 slurm/prep_owt.sh && sbatch --dependency=afterok:JOBID slurm/prep_owt.sh merge
# A job that is preempted, requeued or rerun skips the parts it finished and redoes the rest.
#SBATCH --job-name=prep-owt
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=32
#SBATCH --mem=64G
#SBATCH --time=12:00:00
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

OUT_DIR=${OUT_DIR:-$REPO/data/openwebtext}  # the DATA_DIR of the train_*.sh scripts
NUM_SHARDS=${NUM_SHARDS:-16}                # array size when submitted with `bash slurm/prep_owt.sh`
PREP_ARGS=${PREP_ARGS:-}                    # more flags for `python -m data_prep openwebtext`, e.g.
                                            # "--input /data/owt/*.parquet" for a local copy, "--seq_len 1024"
read -r -a prep_args <<<"$PREP_ARGS"

if [[ -z ${SLURM_JOB_ID:-} ]]; then
    # Not inside a job: submit the array and the merge job.
    [[ $NUM_SHARDS =~ ^[1-9][0-9]*$ ]] || die "NUM_SHARDS=$NUM_SHARDS: use a positive number"
    array=$(sbatch --parsable --array="0-$((NUM_SHARDS - 1))" "$@" "$REPO/slurm/prep_owt.sh") ||
        die "sbatch of the prep array failed"
    array=${array%%;*}
    merge=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes --cpus-per-task=1 --mem=8G \
        --time=02:00:00 --job-name=prep-owt-merge "$@" "$REPO/slurm/prep_owt.sh" merge) ||
        die "sbatch of the merge job failed (the array $array is queued; submit the merge yourself)"
    merge=${merge%%;*}
    echo "prep array job $array ($NUM_SHARDS shards) and merge job $merge -> $OUT_DIR"
    exit 0
fi

# Inside a job: run one step in the background so that USR1 (time limit) can stop it and requeue.
if [[ ${1:-} == merge ]]; then
    cmd=("$PYTHON" -m data_prep merge --out_dir "$OUT_DIR")
else
    shards=${SLURM_ARRAY_TASK_COUNT:-1}
    index=$((${SLURM_ARRAY_TASK_ID:-0} - ${SLURM_ARRAY_TASK_MIN:-0}))
    cmd=("$PYTHON" -m data_prep openwebtext --out_dir "$OUT_DIR" --num_shards "$shards" --shard_index "$index"
        --workers "${SLURM_CPUS_PER_TASK:-1}" --noprogress "${prep_args[@]}")
fi
log "${cmd[*]}"
stopped=0
trap 'stopped=1; log "SIGUSR1: stopping to requeue"; kill -TERM "$child"' USR1
"${cmd[@]}" &
child=$!
wait_for "$child"
status=$?
if ((stopped)); then
    scontrol requeue "$SLURM_JOB_ID" || die "scontrol requeue failed; resubmit the same command to continue"
    exit 0
fi
((status == 0)) || exit "$status"
if [[ ${1:-} != merge && -z ${SLURM_ARRAY_JOB_ID:-} ]]; then  # a single job does the merge itself
    log "merging"
    "$PYTHON" -m data_prep merge --out_dir "$OUT_DIR" || exit
fi
log "done"
