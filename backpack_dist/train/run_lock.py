"""One training job per run dir. A second command on the same --run_dir (a job submitted twice,
or ranks left running after their `deepspeed` runner was killed) would write the same checkpoints
and metrics as the first."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from .config import ConfigError

LOCK_FILE = ".train.lock"


def hold_run_dir(run_dir: Path):
    """Rank 0 takes an exclusive lock on RUN/.train.lock for as long as the returned file stays
    open; the OS releases it when the process ends, however it ends."""
    lock = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise ConfigError(f"run dir {run_dir} is in use by {holder}; wait for that run or stop it (signal its "
                          "training processes, not only the launcher), or use a new --run_dir") from None
    except OSError:  # a file system without flock (some NFS or Lustre mounts): run unguarded
        return lock
    lock.seek(0)
    lock.truncate()
    lock.write(f"training pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    return lock
