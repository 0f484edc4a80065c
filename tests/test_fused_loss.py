"""The "fused" loss (each chunk's body compiled by inductor) equals the eager "chunked" loss:
loss and both gradients, padding columns masked, ignored rows, a last chunk shorter than the
others, which reuses the compiled kernels instead of recompiling (CPU; the GPU default)."""

import pytest
import torch

from backpack_dist.model.loss import chunked_cross_entropy, resolve_loss

V, PADDED, ROWS, CHUNK = 23, 32, 37, 8  # 37 = 4 chunks of 8 and one of 5


def loss_and_grads(fused: bool, autocast: bool):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(ROWS, 6, generator=g, requires_grad=True)
    w = torch.randn(PADDED, 6, generator=g, requires_grad=True)
    t = torch.randint(0, V, (ROWS,), generator=g)
    t[::5] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = chunked_cross_entropy(h, w, t, CHUNK, vocab_size=V, fused=fused)
    return (loss, *torch.autograd.grad(loss * 0.5, (h, w)))


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_loss_equals_chunked_and_compiles_once(autocast):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    fused, eager = loss_and_grads(True, autocast), loss_and_grads(False, autocast)
    tol = dict(atol=1e-2, rtol=1e-2) if autocast else dict(atol=1e-6, rtol=1e-5)  # bf16: one rounding apart
    for a, b in zip(fused, eager, strict=True):
        torch.testing.assert_close(a, b, **tol)
    assert torch.all(fused[2][V:] == 0)  # the padding rows get no gradient
    # Five chunks, two row counts, one compiled graph: the last chunk did not recompile.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_auto_is_fused_only_on_a_gpu():
    assert resolve_loss("auto", torch.device("cuda", 0)) == "fused"
    assert resolve_loss("auto", torch.device("cpu")) == "chunked"
    assert resolve_loss("full", torch.device("cuda", 0)) == "full"
