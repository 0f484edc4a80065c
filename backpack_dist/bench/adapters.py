"""The bench's hooks into helpers that model/ may or may not provide yet: each is used when present,
with a working fallback when not.

Expected (names the bench looks up):
  model.sense_sum.forbid_math_sdpa()  - a context manager under which sdpa may not take the MATH backend
  model.flops.executed_training_flops_per_token(cfg, sense_sum=..., sense_fraction=...) - the FLOPs a
      sense-sum path really executes (e.g. `chunked`'s repeated q/k), beside the defined ones."""

from __future__ import annotations

import contextlib

import torch

from ..model import flops as flops_module
from ..model import sense_sum as sense_sum_module
from ..model.flops import training_flops_per_token

NON_MATH_BACKENDS = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")


def _sdpa_backends(names):
    from torch.nn.attention import SDPBackend

    return [getattr(SDPBackend, n) for n in names if hasattr(SDPBackend, n)]


def forbid_math_sdpa():
    """sdpa without its MATH backend (the one that materialises alpha): a silent fall-back is an
    error. On a CPU only MATH exists, so there it forbids nothing."""
    own = getattr(sense_sum_module, "forbid_math_sdpa", None)
    if own is not None:
        return own()
    if not torch.cuda.is_available():
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(_sdpa_backends(NON_MATH_BACKENDS))


def only_sdpa_backend(name: str):
    """sdpa restricted to the one backend `name` (a torch.nn.attention.SDPBackend member name)."""
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(_sdpa_backends([name]))


def executed_flops_per_token(cfg, sense_sum: str | None, sense_fraction: float) -> float | None:
    """Training FLOPs per token as the chosen sense-sum path executes them; None where model/flops.py
    does not count executed FLOPs."""
    own = getattr(flops_module, "executed_training_flops_per_token", None)
    if own is None:
        return None
    return own(cfg, sense_sum=sense_sum, sense_fraction=sense_fraction)


def defined_flops_per_token(cfg, sense_fraction: float = 1.0) -> float:
    return training_flops_per_token(cfg, sense_fraction=sense_fraction)
