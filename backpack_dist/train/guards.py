"""What stops a run early: a stop signal (Slurm's preemption or time limit) and a run of
non-finite steps."""

from __future__ import annotations

import math
import signal

import torch

from ..data import STOP_SIGNALS


class StopRequest:
    """Remembers SIGUSR1/SIGTERM; the loop acts on it at the next step boundary, on all ranks."""

    def __init__(self):
        self.signum = 0
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def agreed(self, device) -> bool:
        flag = torch.tensor(float(self.signum), device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return flag.item() > 0


class BadSteps:
    """Counts the steps in a row whose update was skipped: a non-finite loss, or non-finite
    gradients (every ZeRO stage and precision skips those and holds the lr schedule, through
    DeepSpeed's wrappers or GuardedAdamW; the engine says whether it applied the update)."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = limit, 0

    def update(self, loss: float, applied: bool) -> str | None:
        """What went wrong with this step, or None when it was applied."""
        if applied and math.isfinite(loss):
            self.in_a_row = 0
            return None
        self.in_a_row += 1
        return f"non-finite loss {loss}" if not math.isfinite(loss) else "non-finite gradients"

    @property
    def exhausted(self) -> bool:
        return self.in_a_row >= self.limit
