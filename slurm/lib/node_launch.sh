#!/bin/bash
# One per node, started by srun from lib/train_job.sh: runs this node's GPUS_PER_NODE training
# processes and passes stop requests on to them as SIGUSR1 (each saves at its next step boundary
# and exits 75). A request is SIGUSR1/SIGTERM to this script or the file STOP_FILE appearing.
# Exit status: training's (torchrun: 1 when any worker exits non-zero, 75 included).
set -u
node=${SLURM_NODEID:?run by srun}
nodes=${SLURM_NNODES:?run by srun}
echo "[$(date '+%F %T')] node $node of $nodes (${SLURMD_NODENAME:-$(hostname)}): $GPUS_PER_NODE training process(es)"

if [[ $LAUNCHER == python || ($LAUNCHER == auto && $GPUS_PER_NODE == 1) ]]; then
    ((GPUS_PER_NODE == 1)) || { echo "error: LAUNCHER=python runs one process per node; set GPUS_PER_NODE=1" >&2; exit 2; }
    mode=python
    export RANK=$node LOCAL_RANK=0 WORLD_SIZE=$nodes LOCAL_WORLD_SIZE=1
    "$PYTHON" -m backpack_dist.train "$@" &
    child=$!
    workers() { echo "$child"; }
else
    # torchrun dies of SIGUSR1 (no handler) and on SIGTERM kills its workers after a short grace
    # time: it starts with both ignored; the workers install their own handlers, and the
    # signals are sent to them directly.
    mode=torchrun
    (
        trap '' USR1 TERM
        exec "$PYTHON" -m torch.distributed.run --nnodes="$nodes" --node_rank="$node" \
            --nproc_per_node="$GPUS_PER_NODE" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
            -m backpack_dist.train "$@"
    ) &
    child=$!
    workers() { pgrep -P "$child"; }
fi

# has_handler SIG PID: PID has a handler for SIG installed (the training does once it runs, and
# Python drops it again while exiting).
has_handler() {
    local key mask
    while read -r key mask; do
        [[ $key == SigCgt: ]] && (((16#$mask >> ($(kill -l "$1") - 1)) & 1)) && return 0
    done 2>/dev/null <"/proc/$2/status"
    return 1
}

# Deliver the stop request once to each worker, when it can act on it. A worker still starting
# up has no handler yet: under python the signal ends it (there is nothing to save yet); under
# torchrun it ignores signals until then, so it is told once its handler is in. A worker that
# had a handler and lost it is exiting already.
stop=
declare -A told=() armed=()
forward() {
    stop=$1
    local pid
    for pid in $(workers); do
        [[ -n ${told[$pid]:-} ]] && continue
        if has_handler "$stop" "$pid" || [[ $mode == python && -z ${armed[$pid]:-} ]]; then
            kill -"$stop" "$pid" 2>/dev/null
            told[$pid]=1
        elif [[ -n ${armed[$pid]:-} ]]; then
            told[$pid]=1
        fi
    done
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

while kill -0 "$child" 2>/dev/null; do
    sleep 1 &
    wait $!
    for pid in $(workers); do
        has_handler USR1 "$pid" && armed[$pid]=1
    done
    if [[ -n $stop ]]; then
        forward "$stop"
    elif [[ -n ${STOP_FILE:-} && -e $STOP_FILE ]]; then
        echo "[$(date '+%F %T')] node $node: stop requested ($STOP_FILE)"
        forward USR1
    fi
done
wait "$child"
