"""What a bit-exact rerun needs beyond the checkpoint: on CPU, a fixed intra-op thread count.

On CPU, torch splits a reduction to one number (the norms behind gradient clipping, the loss's
sums) into one partial sum per thread, and MKL's matrix products split their work by thread too:
the last bits of the loss and of the weights depend on how many threads ran. Left alone, that
number comes from the machine and the launcher (one thread per core, OMP_NUM_THREADS if set,
torchrun sets 1), so a rerun on a busy or other machine, or under another launcher, can drift in
the last bit. The first start of a run fixes it (OMP_NUM_THREADS if set, else this
process's cores shared among the node's processes), records it in RUN/config.json as
"cpu_threads", and every resume uses the recorded number."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

CONFIG_KEY = "cpu_threads"


def recorded_threads(run_dir) -> int | None:
    """The count a run with checkpoints was trained with (None: a new run, or one from before it was recorded)."""
    from .. import checkpoint

    path = Path(run_dir) / "config.json"
    if not path.is_file() or checkpoint.latest_complete_step(checkpoint.checkpoints_dir(run_dir)) is None:
        return None
    try:
        return json.loads(path.read_text()).get(CONFIG_KEY)
    except ValueError:
        return None


def default_threads(local_world: int) -> int:
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, len(os.sched_getaffinity(0)) // max(1, local_world))


def choose_threads(recorded: int | None, local_world: int) -> tuple[int, str | None]:
    """(threads, a note for the user or None): the recorded count wins over the environment."""
    wanted = default_threads(local_world)
    if recorded is None:
        return wanted, None
    note = None
    if "OMP_NUM_THREADS" in os.environ and wanted != recorded:
        note = (f"note: resuming with the run's recorded {recorded} CPU threads per process, not "
                f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}: the thread count changes the last bits")
    return recorded, note


def fix_cpu_threads(threads: int) -> None:
    torch.set_num_threads(threads)  # torch's own kernels and MKL's


def settle_cpu_threads(run_dir, on_gpu: bool, report) -> int | None:
    """Fix this process's thread count for the run; returns what to record (None on GPU, where the
    math runs on the device)."""
    if on_gpu:
        return None
    threads, note = choose_threads(recorded_threads(run_dir), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if note:
        report(note)
    fix_cpu_threads(threads)
    return threads
