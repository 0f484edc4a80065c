"""Fault injection for tests of the guards, off unless an environment variable names it.

BACKPACK_FAILPOINT_NONFINITE_GRADS=3,4,9 makes the gradients of the steps numbered 3, 4 and 9
(1-based optimizer steps) infinite while their loss stays finite: what an overflow in backward
does, and what only the optimizer-side guard can see."""

from __future__ import annotations

import os

import torch

NONFINITE_GRADS = "BACKPACK_FAILPOINT_NONFINITE_GRADS"


def nonfinite_grad_steps() -> set[int]:
    value = os.environ.get(NONFINITE_GRADS, "")
    return {int(s) for s in value.split(",") if s.strip()}


def install(module: torch.nn.Module, current_step) -> None:
    """Poison one parameter's gradient on the chosen steps; current_step() is the step being run."""
    steps = nonfinite_grad_steps()
    if not steps:
        return
    param = next(p for p in module.parameters() if p.requires_grad)
    param.register_hook(lambda grad: grad * float("inf") if current_step() in steps else grad)
