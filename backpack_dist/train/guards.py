"""What stops a run early: a stop signal (Slurm's preemption or time limit) and a run of
non-finite steps; and the step losses, which stay on the device until a log step reads them."""

from __future__ import annotations

import math
import signal

import torch

from ..data import STOP_SIGNALS


class StopRequest:
    """Remembers SIGUSR1/SIGTERM; the loop acts on it at the next step boundary, on all ranks.
    Collective: every rank makes one."""

    def __init__(self):
        self.signum = 0
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        # The ranks agree over a CPU (gloo) group: an NCCL all-reduce read on the host would wait
        # for every kernel queued, at every step.
        self.group = None if torch.distributed.get_backend() == "gloo" else torch.distributed.new_group(backend="gloo")

    def _handle(self, signum, frame):
        self.signum = signum

    def agreed(self) -> bool:
        flag = torch.tensor(float(self.signum))
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self.group)
        return flag.item() > 0


class StepLosses:
    """Each step's summed loss, kept on the device until `read` (one all-reduce and one host read
    for all the steps since the last), so steps between log steps queue work without waiting."""

    def __init__(self, divisor: int):
        self.divisor, self.pending = divisor, []

    def add(self, loss_sum: torch.Tensor) -> None:
        self.pending.append(loss_sum)

    def read(self) -> list[float]:
        """Collective: the mean loss of every step since the last read, over all ranks."""
        sums = torch.stack(self.pending)
        self.pending = []
        torch.distributed.all_reduce(sums)
        return [s / self.divisor for s in sums.tolist()]


class BadSteps:
    """Counts the steps in a row whose update was skipped: a non-finite loss, or non-finite
    gradients (every ZeRO stage and precision skips those and holds the lr schedule, through
    DeepSpeed's wrappers or GuardedAdamW; the engine says whether it applied the update)."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = limit, 0

    def update(self, applied: bool) -> bool:
        """Whether this step was a bad one. A non-finite loss makes non-finite gradients, so
        DeepSpeed's flag covers it."""
        self.in_a_row = 0 if applied else self.in_a_row + 1
        return not applied

    @staticmethod
    def describe(loss: float) -> str:
        return f"non-finite loss {loss}" if not math.isfinite(loss) else "non-finite gradients"

    @property
    def exhausted(self) -> bool:
        return self.in_a_row >= self.limit
