# Sourced by the sbatch scripts in slurm/: paths, the Python to use, logging and errors.
# Every setting is an environment variable with a default; sbatch passes the submitting
# shell's environment to the job (--export=ALL), so `DATA_DIR=... sbatch slurm/x.sh` works.

die() {
    echo "error: $*" >&2
    exit 2
}

log() {
    echo "[$(date '+%F %T')] ${SLURM_JOB_ID:+job $SLURM_JOB_ID: }$*"
}

# PYTHON: the interpreter of the environment that has backpack-dist installed (default: the
# python3 on PATH at submission, i.e. an activated virtual environment).
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON not found; activate the environment or set PYTHON=/path/to/python"
export PYTHON
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# wait_for PID: wait until PID exits even when trapped signals interrupt `wait`; returns its status.
wait_for() {
    local pid=$1
    while kill -0 "$pid" 2>/dev/null; do
        wait "$pid"
    done
    wait "$pid"
}
