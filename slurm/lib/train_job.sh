# The body of train_{micro,mini,small}.sh (sourced after common.sh, with SIZE set): starts one
# launcher per node with srun, passes stop signals on, and requeues the job when training saved
# a checkpoint and stopped early on SIGUSR1 so that the next start resumes from it.

FAMILY=${FAMILY:-backpack}  # backpack | transformer (the baseline of the same size)
[[ $FAMILY == backpack || $FAMILY == transformer ]] || die "FAMILY=$FAMILY: use backpack or transformer"
MODEL=$FAMILY-$SIZE
case $SIZE in
    micro | mini) default_zero=1 ;;  # fits one GPU's memory many times over: replicate the optimizer
    small) default_zero=2 ;;         # shard optimizer state and gradients across the GPUs
esac

DATA_DIR=${DATA_DIR:-$REPO/data/openwebtext}           # output of slurm/prep_owt.sh (python -m data_prep)
RUN_DIR=${RUN_DIR:-$REPO/runs/$MODEL}                   # checkpoints, metrics.jsonl; same name on requeue = resume
DS_CONFIG=${DS_CONFIG:-$REPO/ds_configs/zero$default_zero.json}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}                       # training processes per node
LAUNCHER=${LAUNCHER:-auto}                              # auto: python for 1 process per node, else torchrun
MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}  # the same port again after a requeue
SELF_REQUEUE=${SELF_REQUEUE:-1}                         # 0: exit 75 instead, for clusters with RequeueExit=75
CONFIG=${CONFIG:-$REPO/configs/$MODEL.toml}             # the recipe (--config); the settings here and EXTRA_ARGS win
EXTRA_ARGS=${EXTRA_ARGS:-}                              # more flags for python -m backpack_dist.train

[[ -f $CONFIG ]] || die "CONFIG=$CONFIG not found; use a recipe of $REPO/configs/ or a run's RUN/config.json"
[[ -n ${SLURM_JOB_ID:-} ]] || die "submit this script with sbatch (it reads the node list from Slurm)"
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR MASTER_PORT GPUS_PER_NODE LAUNCHER

read -r -a extra_args <<<"$EXTRA_ARGS"
train_args=(--config "$CONFIG" --model "$MODEL" --data_dir "$DATA_DIR" --run_dir "$RUN_DIR" --ds_config "$DS_CONFIG" "${extra_args[@]}")
log "$MODEL on $SLURM_NNODES node(s) x $GPUS_PER_NODE process(es), start ${SLURM_RESTART_COUNT:-0}," \
    "rendezvous $MASTER_ADDR:$MASTER_PORT"
log "run dir $RUN_DIR, data $DATA_DIR, $DS_CONFIG, recipe $CONFIG"

# USR1 is the early warning (--signal=B:USR1@...: time limit, or `scancel --signal=USR1 --batch`):
# ask training to save and exit 75, then requeue. The request travels as a file in the run dir
# that each node's launcher watches and turns into a signal to its training processes only
# (a signal through srun would reach every process of the step, helpers such as wandb's
# included). TERM comes from Slurm itself (scancel, scontrol requeue, preemption) and reaches
# every process anyway; the job's fate is then Slurm's.
mkdir -p "$RUN_DIR" || die "cannot create RUN_DIR=$RUN_DIR"
export STOP_FILE=$RUN_DIR/.stop-request-job$SLURM_JOB_ID
rm -f "$STOP_FILE"  # left by this job's previous start (the job id stays the same when requeued)
got_usr1=0
got_term=0
trap 'got_usr1=1; log "SIGUSR1: asking training to save and stop"; touch "$STOP_FILE"' USR1
trap 'got_term=1; log "SIGTERM: asking training to save and stop"; touch "$STOP_FILE"' TERM

srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --cpus-per-task="$SLURM_CPUS_ON_NODE" \
    --kill-on-bad-exit=1 bash "$REPO/slurm/lib/node_launch.sh" "${train_args[@]}" &
srun_pid=$!
wait_for "$srun_pid"
status=$?
rm -f "$STOP_FILE"

if ((status == 0)); then
    log "training finished"
    exit 0
fi
if ((got_term)); then
    log "stopped by Slurm (exit $status); Slurm requeues or ends the job"
    exit "$status"
fi
if ((got_usr1)); then
    if ((SELF_REQUEUE)); then
        log "stopped (exit $status): requeueing; the next start resumes from the newest checkpoint in $RUN_DIR"
        scontrol requeue "$SLURM_JOB_ID" || die "scontrol requeue failed; resubmit with RUN_DIR=$RUN_DIR to resume"
        exit 0
    fi
    log "stopped (exit $status): exiting 75 for RequeueExit=75"
    exit 75
fi
log "training failed (exit $status); not requeued. Fix the cause, then resubmit with RUN_DIR=$RUN_DIR to resume"
exit "$status"
