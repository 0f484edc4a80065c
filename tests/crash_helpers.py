"""Stopping a training job for good at a named moment (backpack_dist/train/failpoints.py) and
reading what its rerun says."""

from __future__ import annotations

import os
import re
import signal

from train_helpers import start_training, wait_until

from backpack_dist.train.failpoints import PAUSE, PAUSED


def kill_job(proc) -> None:
    """SIGKILL to every process of the job at once (launcher, ranks, loader workers), as a crash."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_until_killed(nprocs, args, tmp_path, failpoint: str, name="killed", extra_env=None) -> str:
    """Start the job, SIGKILL it once one rank pauses at `failpoint` (PHASE:STEP[:RANK]); returns its log."""
    marker, log = tmp_path / f"{name}.paused", tmp_path / f"{name}.log"
    proc = start_training(nprocs, args, log, {**(extra_env or {}), PAUSE: failpoint, PAUSED: str(marker)})
    try:
        wait_until(marker.exists, proc, f"failpoint {failpoint}")
    finally:
        kill_job(proc)
    expected = failpoint if failpoint.count(":") == 2 else f"{failpoint}:0"
    assert marker.read_text().strip() == expected  # it was killed there
    return log.read_text()


def resumed_from(log_text: str) -> int | None:
    """The step named by the run's "resumed from .../step_N" line (None: it started afresh)."""
    found = re.findall(r"resumed from \S*step_(\d{8})(?:_universal)?$", log_text, re.M)
    assert len(found) <= 1, found
    return int(found[0]) if found else None
