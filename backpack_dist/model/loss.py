"""Mean next-token cross-entropy over the tied output layer, two exact ways.

- "full": logits = h E^T for every token, then F.cross_entropy on their fp32 copy. At 32 x 512
  tokens and a 50257-word vocabulary that holds several GB of logits and their gradient.
- "chunked": the same numbers a chunk of tokens at a time. Because the loss is a scalar, its
  gradients with respect to h and E are computed chunk by chunk in the forward pass itself (the
  matmuls the backward pass would do anyway, no recomputation) and the backward pass only scales
  them by the incoming gradient. Only one chunk's logits ever exist.
- "fused": "chunked" with each chunk's softmax, loss and logit gradient in one torch.compile'd
  function, so inductor fuses the elementwise passes over the chunk's (rows x V) logits: eager
  "chunked" reads or writes them about 19 times (the fp32 copy, logsumexp's max, subtract, exp and
  sum, the gather, subtract, exp, scatter, scale, the cast: about 60 GB per 32 x 512 micro batch at
  Small), the compiled body about 3 times (a reduction kernel reading the matmul's output, and one
  pointwise kernel reading it again and writing the bf16 gradient; read TORCH_LOGS=output_code).
  The row count is marked dynamic, so the shorter last chunk does not recompile.
- "auto": "fused" on a GPU, "chunked" elsewhere (inductor's CPU compile costs more than it saves).

Both multiply by the whole (padded) embedding, so the output matmul keeps the padded width
(model/config.py's vocab_multiple), and give the padding columns -inf logits (vocab_size given):
they get no probability, no gradient (the padded rows of E get exactly zero) and are never targets.

Both compute logits in the matmul dtype (bf16 under autocast) and the softmax in fp32; targets
equal to -100 are ignored; the mean is over the other tokens (NaN when there are none, as in
F.cross_entropy).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

LOSS_IMPLEMENTATIONS = ("auto", "full", "chunked", "fused")
IGNORE_INDEX = -100
DEFAULT_CHUNK_TOKENS = 4096


def check_loss_name(impl: str) -> str:
    if impl not in LOSS_IMPLEMENTATIONS:
        raise ValueError(f"unknown loss implementation {impl!r}: choose one of {', '.join(LOSS_IMPLEMENTATIONS)}")
    return impl


def _matmul_dtype(h: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype F.linear would compute in here (autocast's, if it is on)."""
    if torch.is_autocast_enabled(h.device.type):
        return torch.get_autocast_dtype(h.device.type)
    return torch.promote_types(h.dtype, weight.dtype)


def _chunk_logits(h_chunk, weight, vocab_size=None):
    logits = (h_chunk @ weight.T).float()
    if vocab_size is not None and vocab_size < logits.shape[1]:
        logits[:, vocab_size:] = float("-inf")  # padding columns: a fresh fp32 tensor, filled in place
    return logits


def full_cross_entropy(h, weight, targets, vocab_size=None):
    """h (N, d), weight (V, d), targets (N,); weight's rows from vocab_size on are padding."""
    logits = F.linear(h, weight).float()
    if vocab_size is not None and vocab_size < logits.shape[1]:
        padding = torch.arange(logits.shape[1], device=logits.device) >= vocab_size
        logits = logits.masked_fill(padding, float("-inf"))
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


def _chunked_loss_only(h, weight, targets, chunk_tokens, vocab_size=None):
    dtype = _matmul_dtype(h, weight)
    h_c, w_c = h.to(dtype), weight.to(dtype)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, h.shape[0], chunk_tokens):
        t = targets[start: start + chunk_tokens]
        logits = _chunk_logits(h_c[start: start + chunk_tokens], w_c, vocab_size)
        total += F.cross_entropy(logits, t, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum()


def _chunk_body(products, safe_t, keep, denominator, vocab_size):
    """One chunk's (loss sum, d(loss sum / denominator)/d(logits) in the matmul dtype) from the matmul's
    output (rows, V); eager, in place on the fp32 copy."""
    logits = products.float()
    if vocab_size is not None and vocab_size < logits.shape[1]:
        logits[:, vocab_size:] = float("-inf")  # padding columns: a fresh fp32 tensor, filled in place
    lse = torch.logsumexp(logits, dim=-1)
    target_logit = logits.gather(1, safe_t[:, None]).squeeze(1)
    loss_sum = ((lse - target_logit) * keep).sum()
    # d(sum of losses)/d(logits) = softmax - one_hot(target), zero on ignored rows.
    grad_logits = logits.sub_(lse[:, None]).exp_()
    grad_logits.scatter_add_(1, safe_t[:, None], torch.full_like(lse[:, None], -1.0))
    grad_logits.mul_(keep[:, None].float() / denominator)
    return loss_sum, grad_logits.to(products.dtype)


def _chunk_body_out_of_place(products, safe_t, keep, denominator, vocab_size):
    """_chunk_body's numbers without in-place ops, for torch.compile to fuse."""
    logits = products.float()
    columns = torch.arange(logits.shape[1], device=logits.device)
    if vocab_size is not None and vocab_size < logits.shape[1]:
        logits = logits.masked_fill(columns >= vocab_size, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    target_logit = logits.gather(1, safe_t[:, None])
    loss_sum = ((lse - target_logit).squeeze(1) * keep).sum()
    one_hot = (columns[None, :] == safe_t[:, None]).float()
    grad_logits = ((logits - lse).exp() - one_hot) * (keep[:, None].float() / denominator)
    return loss_sum, grad_logits.to(products.dtype)


@functools.lru_cache(maxsize=1)
def _compiled_chunk_body():
    return torch.compile(_chunk_body_out_of_place, fullgraph=True)


def _fused_chunk_body(products, safe_t, keep, denominator, vocab_size):
    for t in (products, safe_t, keep):
        torch._dynamo.maybe_mark_dynamic(t, 0)  # the last, shorter chunk reuses the compiled kernels
    return _compiled_chunk_body()(products, safe_t, keep, denominator, vocab_size)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk_tokens, vocab_size, body):
        dtype = _matmul_dtype(h, weight)
        h_c, w_c = h.to(dtype), weight.to(dtype)
        valid = targets != IGNORE_INDEX
        count = valid.sum()
        denominator = count.clamp(min=1)  # all ignored: zero gradients
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h_c) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        for start in range(0, h.shape[0], chunk_tokens):
            stop = start + chunk_tokens
            t, keep = targets[start:stop], valid[start:stop]
            safe_t = t.masked_fill(~keep, 0)
            loss_sum, grad_logits = body(h_c[start:stop] @ w_c.T, safe_t, keep, denominator, vocab_size)
            total += loss_sum
            if grad_h is not None:
                grad_h[start:stop] = grad_logits @ w_c
            if grad_w is not None:
                grad_w += (grad_logits.T @ h_c[start:stop]).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.input_dtypes = (h.dtype, weight.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.input_dtypes
        dh = None if grad_h is None else (grad_h * grad_loss.to(grad_h.dtype)).to(h_dtype)
        dw = None if grad_w is None else (grad_w * grad_loss).to(w_dtype)
        return dh, dw, None, None, None, None


def chunked_cross_entropy(h, weight, targets, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, vocab_size=None,
                          fused: bool = False):
    """The mean cross-entropy of h (N, d) @ weight (V, d)^T against targets (N,), chunk_tokens
    rows at a time; equals full_cross_entropy to rounding. fused: each chunk's body compiled."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        body = _fused_chunk_body if fused else _chunk_body
        return _ChunkedCrossEntropy.apply(h, weight, targets, chunk_tokens, vocab_size, body)
    return _chunked_loss_only(h, weight, targets, chunk_tokens, vocab_size)


def resolve_loss(impl: str, device: torch.device) -> str:
    """The concrete implementation "auto" stands for on this device."""
    if impl != "auto":
        return impl
    return "fused" if device.type == "cuda" else "chunked"


def cross_entropy(h, weight, targets, impl: str = "auto", chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                  vocab_size: int | None = None):
    """vocab_size: the real vocabulary; weight's rows after it are padding (masked). None: all real."""
    impl = resolve_loss(impl, h.device)
    if impl == "full":
        return full_cross_entropy(h, weight, targets, vocab_size)
    return chunked_cross_entropy(h, weight, targets, chunk_tokens, vocab_size, fused=impl == "fused")
