"""Fault injection for tests of the guards and of crash consistency, off unless an environment
variable names it.

BACKPACK_FAILPOINT_NONFINITE_GRADS=3,4,9 makes the gradients of the steps numbered 3, 4 and 9
(1-based optimizer steps) infinite while their loss stays finite: what an overflow in backward
does, and what only the optimizer-side guard can see.

BACKPACK_FAILPOINT_PAUSE=PHASE:STEP[:RANK] stops one process for good at a named moment of one
step (rank 0 unless RANK is given), after writing "PHASE:STEP:RANK" to the file named by
BACKPACK_FAILPOINT_PAUSED: a test then SIGKILLs the whole job there, as a crash would. Phases:
  step             in backward, mid-step
  validation       in the first forward of the validation loss
  save             this rank has written its checkpoint files, others may still be writing
  before_complete  every file is written and flushed, COMPLETE not yet (rank 0)
  after_complete   COMPLETE written; `latest` not yet replaced, older checkpoints not yet deleted
"""

from __future__ import annotations

import os
import time

import torch

from .. import atomic

NONFINITE_GRADS = "BACKPACK_FAILPOINT_NONFINITE_GRADS"
PAUSE = "BACKPACK_FAILPOINT_PAUSE"
PAUSED = "BACKPACK_FAILPOINT_PAUSED"
PHASES = ("step", "validation", "save", "before_complete", "after_complete")


def nonfinite_grad_steps() -> set[int]:
    value = os.environ.get(NONFINITE_GRADS, "")
    return {int(s) for s in value.split(",") if s.strip()}


def pause_spec() -> tuple[str, int, int] | None:
    value = os.environ.get(PAUSE, "")
    if not value:
        return None
    phase, step, *rank = value.split(":")
    if phase not in PHASES:
        raise ValueError(f"{PAUSE}={value}: unknown phase {phase!r}, use one of {', '.join(PHASES)}")
    return phase, int(step), int(rank[0]) if rank else 0


def pause_point(phase: str, step: int) -> None:
    """Hang here forever if this is the moment named by BACKPACK_FAILPOINT_PAUSE."""
    spec = pause_spec()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if spec != (phase, step, rank):
        return
    marker = os.environ.get(PAUSED)
    if marker:
        atomic.write_text(marker, f"{phase}:{step}:{rank}\n")  # the test waiting on it reads it whole
    while True:  # until killed; a stop signal only sets a flag the loop never sees again
        time.sleep(3600)


def install(module: torch.nn.Module, current_step) -> None:
    """Hooks for the failpoints that fire inside the model; current_step() is the step being run."""
    steps = nonfinite_grad_steps()
    spec = pause_spec()
    if not steps and spec is None:
        return
    param = next(p for p in module.parameters() if p.requires_grad)
    if steps:  # poison one parameter's gradient on the chosen steps
        param.register_hook(lambda grad: grad * float("inf") if current_step() in steps else grad)
    if spec is not None and spec[0] == "step":
        param.register_hook(lambda grad: (pause_point("step", current_step()), grad)[1])
    if spec is not None and spec[0] == "validation":
        # The loop counts the step before validating it: current_step() is then one ahead.
        module.register_forward_pre_hook(
            lambda mod, args: None if mod.training else pause_point("validation", current_step() - 1))
