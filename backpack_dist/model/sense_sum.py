"""The Backpack's sense sum o_i = sum_l sum_{j<=i} alpha_l[i, j] C(x_j)_l, several exact ways.

It is causal attention with n_senses heads of query/key width d/k and value width d, summed
over heads. Inputs: q, k (B, n_senses, T, d/k); values (B, n_senses, T, d). Output (B, T, d).

Backends (torch 2.14; unverified on a GPU). torch._C._get_sdp_priority_order() reads
[FLASH, EFFICIENT, MATH, CUDNN, OVERRIDEABLE] here; the issue's reading that aten's sdp_utils puts
cuDNN first on sm90 with cuDNN > 9.15 is NOT checked against the C++ source (not shipped in the
wheel). Flash needs equal q/k/v widths <= 256; memory-efficient accepts a value width unlike the
query's; cuDNN reportedly accepts q/k 48 with value width <= 128 (forward and backward).

- "sdpa": one call with value width d (768 at Small): flash and (per the above) cuDNN refuse it, so
  memory-efficient, else the math kernel, which materialises alpha.
- "chunked": values split into k chunks of width d/k, (sense, chunk) pairs as k^2 heads with q, k
  repeated (copies): equal widths 48, so cuDNN where tried first, else flash. 2k/(k+1) = 1.88x the
  defined FLOPs at Small (QK^T per chunk; model/flops.py sense_sum_flops).
- "chunked_loop": the same chunks, one call per chunk, no copies; same FLOPs as "chunked".
- "chunked_wide": value chunks of the widest multiple of 8 <= 128 dividing d (128 at Small: 6
  calls), q, k as they are: cuDNN if it takes it, else memory-efficient. 1.29x defined FLOPs.
- "flex": torch.nn.attention.flex_attention, which takes value widths unlike the query's, one
  call per value chunk of at most 256 columns (its kernel keeps a block of output rows in
  registers, the width rounded up to a power of two: 768 would need 1024 and risks running out
  of resources): 3 calls for Backpack-Small, 1.12x defined FLOPs: close to the issue's 1.1x target, which only
  "sdpa" (1.0x, one call) meets. Compiled on a GPU; on a
  CPU it has no backward, so use it there for inference only.
- "reference": alpha materialised in fp32, for tests.
- "auto": "chunked" on a GPU in half precision with a flash-compatible width, else "sdpa". Not
  yet "chunked_wide": that waits for a GPU run to confirm cuDNN takes it and it is faster.

fused_attention_only() excludes the math backend, so GPU tests and the bench fail instead of
silently materialising alpha.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F

SENSE_SUM_IMPLEMENTATIONS = ("auto", "sdpa", "chunked", "chunked_loop", "chunked_wide", "flex", "reference")


def causal_softmax_fp32(q, k):
    """alpha (B, n_senses, T, T), computed in fp32 whatever the input dtype."""
    T = q.shape[-2]
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


def sense_sum_reference(q, k, values):
    alpha = causal_softmax_fp32(q, k)
    return torch.einsum("blij,bljd->bid", alpha, values.float()).to(values.dtype)


def sense_sum_sdpa(q, k, values):
    # The fused kernels keep the softmax statistics in fp32 even for bf16 inputs.
    return F.scaled_dot_product_attention(q, k, values, is_causal=True).sum(dim=1)


def sense_sum_chunked(q, k, values):
    B, n, T, width = q.shape
    d = values.shape[-1]
    chunks = d // width
    # Head (l, c) attends with sense l's q/k to chunk c of sense l's values.
    q_rep, k_rep = (t.unsqueeze(2).expand(B, n, chunks, T, width).reshape(B, n * chunks, T, width) for t in (q, k))
    v_split = values.reshape(B, n, T, chunks, width).transpose(2, 3).reshape(B, n * chunks, T, width)
    out = F.scaled_dot_product_attention(q_rep, k_rep, v_split, is_causal=True)
    return out.view(B, n, chunks, T, width).sum(dim=1).transpose(1, 2).reshape(B, T, d)


def sense_sum_value_chunks(q, k, values, width: int):
    """One fused-attention call per value chunk of `width` columns, q and k as they are."""
    # split, not slicing: its backward concatenates the chunks' gradients once, where each slice's
    # backward would write a full-size zero tensor.
    parts = [F.scaled_dot_product_attention(q, k, chunk, is_causal=True).sum(dim=1)
             for chunk in values.split(width, dim=-1)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def sense_sum_chunked_loop(q, k, values):
    return sense_sum_value_chunks(q, k, values, q.shape[-1])


def wide_value_width(d: int, limit: int = 128) -> int:
    """The widest multiple of 8 <= limit dividing d (cuDNN's value-width limit); d if none."""
    return next((w for w in range(min(limit, d) // 8 * 8, 0, -8) if d % w == 0), d)


def sense_sum_chunked_wide(q, k, values):
    return sense_sum_value_chunks(q, k, values, wide_value_width(values.shape[-1]))


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@functools.lru_cache(maxsize=16)
def _causal_block_mask(T: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(_causal, None, None, T, T, device=device)


@functools.lru_cache(maxsize=1)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def sense_sum_flex(q, k, values):
    from torch.nn.attention.flex_attention import flex_attention

    if not torch.is_grad_enabled():  # it refuses inputs that require grad on a CPU, even under no_grad
        q, k, values = q.detach(), k.detach(), values.detach()
    T, d = q.shape[-2], values.shape[-1]
    mask = _causal_block_mask(T, str(q.device))
    # Uncompiled flex_attention is a slow reference; inside an outer torch.compile it is traced.
    run = _compiled_flex_attention() if q.is_cuda and not torch.compiler.is_compiling() else flex_attention
    parts = [run(q, k, chunk, block_mask=mask).sum(dim=1) for chunk in values.split(flex_value_width(d), dim=-1)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def flex_value_width(d: int, limit: int = 256) -> int:
    """The widest power of two <= limit that divides d (d itself if d <= limit)."""
    if d <= limit:
        return d
    width = limit
    while d % width:
        width //= 2
    return width


def resolve_sense_sum(impl: str, q: torch.Tensor) -> str:
    """The concrete implementation "auto" stands for with these inputs."""
    if impl != "auto":
        return impl
    width = q.shape[-1]
    flash_ok = q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and width % 8 == 0 and width <= 256
    return "chunked" if flash_ok else "sdpa"


IMPLEMENTATIONS = {
    "sdpa": sense_sum_sdpa,
    "chunked": sense_sum_chunked,
    "chunked_loop": sense_sum_chunked_loop,
    "chunked_wide": sense_sum_chunked_wide,
    "flex": sense_sum_flex,
    "reference": sense_sum_reference,
}


def sense_sum(q, k, values, impl: str = "auto"):
    """o = sum_l alpha_l @ values_l (B, T, d) with the chosen implementation."""
    return IMPLEMENTATIONS[resolve_sense_sum(impl, q)](q, k, values)


@contextlib.contextmanager
def fused_attention_only():
    """Run SDPA calls with every backend but MATH, so a fall-back to the kernel that
    materialises alpha raises instead of running slowly (used by the GPU tests and the bench)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        yield


def check_sense_sum_name(impl: str) -> str:
    if impl not in SENSE_SUM_IMPLEMENTATIONS:
        raise ValueError(f"unknown sense_sum implementation {impl!r}: choose one of "
                         f"{', '.join(SENSE_SUM_IMPLEMENTATIONS)}")
    return impl
