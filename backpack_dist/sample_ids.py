"""Debugging the data order: with BACKPACK_DEBUG_SAMPLE_IDS=1 the trainer's rank 0 writes the global
sample ids of every step's batch (all ranks) to RUN/sample_ids.jsonl, one {"step", "sample_ids"}
line per step (a step run again after a resume is written again: the last line counts). Tests
check with it that a resume, on any number of processes, sees every sample once."""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "BACKPACK_DEBUG_SAMPLE_IDS"
FILE = "sample_ids.jsonl"


def enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def log_step(run_dir, step: int, ids: list[int]) -> None:
    """Collective: rank 0 appends the ids every rank consumed in this step, rank by rank."""
    import torch

    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, ids)
    if torch.distributed.get_rank() == 0:
        with open(Path(run_dir) / FILE, "a") as f:
            f.write(json.dumps({"step": step, "sample_ids": gathered}) + "\n")
