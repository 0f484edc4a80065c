"""The loss over the padded output matrix (padding columns masked) equals today's loss over the
matrix sliced to the real vocabulary: loss and every gradient, padded rows exactly zero (CPU)."""

import pytest
import torch
from common import tiny_overrides

from backpack_dist.model import build_model, model_from_config
from backpack_dist.model.loss import cross_entropy, full_cross_entropy

V, PADDED = 23, 32


def sliced_reference(h, w, t):
    """Today's path: the real rows only; autograd gives the padded rows zero gradient."""
    return full_cross_entropy(h, w[:V], t)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("impl,chunk", [("full", 4096), ("chunked", 5), ("chunked", 37), ("chunked", 1000)])
def test_padded_loss_equals_sliced(impl, chunk, autocast):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 6, generator=g, requires_grad=True)  # 37 rows: chunk 5 does not divide them
    w = torch.randn(PADDED, 6, generator=g, requires_grad=True)
    t = torch.randint(0, V, (37,), generator=g)
    t[::5] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ref = sliced_reference(h, w, t)
        out = cross_entropy(h, w, t, impl=impl, chunk_tokens=chunk, vocab_size=V)
    tol = dict(atol=2e-3, rtol=2e-2) if autocast else dict(atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(out, ref, **tol)
    got, want = torch.autograd.grad(out * 0.25, (h, w)), torch.autograd.grad(ref * 0.25, (h, w))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **tol)
    assert torch.all(got[1][V:] == 0)


@pytest.mark.parametrize("vocab_multiple", [8, 1])
@pytest.mark.parametrize("family", ["backpack", "transformer"])
@pytest.mark.parametrize("loss", ["full", "chunked"])
def test_model_loss_equals_sliced_output_layer(family, loss, vocab_multiple):
    torch.manual_seed(0)
    cfg = build_model(f"{family}-micro", **tiny_overrides()).config
    model = model_from_config(type(cfg)(**{**cfg.to_dict(), "vocab_multiple": vocab_multiple}))
    assert model.wte.weight.shape[0] == (104 if vocab_multiple == 8 else 101)
    g = torch.Generator().manual_seed(1)
    ids, targets = torch.randint(0, 101, (2, 9), generator=g), torch.randint(0, 101, (2, 9), generator=g)
    targets[0, ::3] = -100
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model.zero_grad(set_to_none=True)
            hidden = model.final_hidden(ids)
            ref = full_cross_entropy(hidden.flatten(0, 1), model.output_embedding(), targets.flatten())
            ref.backward()
            want = {n: p.grad.clone() for n, p in model.named_parameters()}
            model.zero_grad(set_to_none=True)
            out = model.set_implementation(loss=loss, loss_chunk_tokens=5)(ids, targets=targets)  # 18 rows
            out.backward()
        tol = dict(atol=2e-3, rtol=2e-2) if autocast else dict(atol=5e-5, rtol=5e-5)
        torch.testing.assert_close(out, ref, **tol)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, want[name], **tol, msg=lambda m, n=name: f"{n}: {m}")
        assert torch.all(model.wte.weight.grad[101:] == 0)  # padded rows: exactly zero
        with torch.no_grad():
            assert model(ids).shape[-1] == 101  # users still see the real vocabulary
