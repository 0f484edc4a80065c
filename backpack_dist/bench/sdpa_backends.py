"""Which sdpa backend a sense-sum path may take in the bench: all but MATH (the one that
materialises alpha), or exactly one, so a silent fall-back is an error rather than a slow row."""

from __future__ import annotations

import contextlib

import torch

from ..model.sense_sum import fused_attention_only


def forbid_math_sdpa():
    """model/sense_sum.py's fused_attention_only on a GPU; on a CPU nothing is forbidden (the
    dry run exercises the stage, not the kernels)."""
    return fused_attention_only() if torch.cuda.is_available() else contextlib.nullcontext()


def only_sdpa_backend(name: str):
    """sdpa restricted to the one backend `name` (a torch.nn.attention.SDPBackend member name)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name)])
