"""Every fast implementation equals its reference in fp32, outputs and gradients (CPU).

The same equivalences run in bf16 on a GPU in test_gpu.py."""

import itertools
import json
import subprocess
import sys

import pytest
import torch
from common import REPO, tiny_overrides

from backpack_dist.model import build_model
from backpack_dist.model.loss import chunked_cross_entropy, full_cross_entropy
from backpack_dist.model.sense_sum import SENSE_SUM_IMPLEMENTATIONS, flex_value_width, sense_sum, wide_value_width

TOL = dict(atol=2e-5, rtol=2e-5)
FAST_SENSE_SUMS = [impl for impl in SENSE_SUM_IMPLEMENTATIONS if impl != "reference"]


def sense_inputs(T, B=2, n=4, width=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, n, T, width, generator=g) for _ in range(2))
    v = torch.randn(B, n, T, n * width, generator=g)
    return [t.requires_grad_() for t in (q, k, v)]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("T", [1, 7, 24])
@pytest.mark.parametrize("impl", FAST_SENSE_SUMS)
def test_sense_sum_equals_reference(impl, T):
    inputs = sense_inputs(T)
    ref = sense_sum(*inputs, impl="reference")
    if impl == "flex":  # FlexAttention has no CPU backward: check the forward pass only.
        with torch.no_grad():
            torch.testing.assert_close(sense_sum(*inputs, impl=impl), ref.detach(), **TOL)
        return
    out = sense_sum(*inputs, impl=impl)
    torch.testing.assert_close(out, ref, **TOL)
    upstream = torch.randn_like(ref)
    want = torch.autograd.grad(ref, inputs, upstream)
    got = torch.autograd.grad(out, inputs, upstream)
    for name, a, b in zip("qkv", got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_splits_wide_values_into_chunks_exactly():
    q, k, v = sense_inputs(9, n=40, width=8)  # d = 320: five 64-wide value chunks
    assert flex_value_width(320) == 64
    with torch.no_grad():
        torch.testing.assert_close(sense_sum(q, k, v, impl="flex"), sense_sum(q, k, v, impl="reference"), **TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_wide_splits_values_and_equals_reference(dtype):
    """d = 160 > 128: two value chunks of 80 (the widest multiple of 8 <= 128 dividing d), odd T."""
    assert wide_value_width(160) == 80 and wide_value_width(768) == 128 and wide_value_width(48) == 48
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in sense_inputs(T=13, n=4, width=40))
    ref, out = sense_sum(q, k, v, impl="reference"), sense_sum(q, k, v, impl="chunked_wide")
    tol = TOL if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(out, ref, **tol)
    upstream = torch.randn_like(ref)
    for name, a, b in zip("qkv", torch.autograd.grad(out, (q, k, v), upstream),
                          torch.autograd.grad(ref, (q, k, v), upstream), strict=True):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"d{name}: {m}")


def test_sense_sum_is_causal_attention_summed_over_heads():
    q, k, v = (t.detach() for t in sense_inputs(5))
    alpha = torch.softmax((q @ k.transpose(-1, -2) / 8**0.5).masked_fill(torch.ones(5, 5).triu(1).bool(), -1e9), -1)
    torch.testing.assert_close(sense_sum(q, k, v, impl="reference"), (alpha @ v).sum(1), **TOL)


def loss_inputs(N=37, V=23, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, requires_grad=True)
    w = torch.randn(V, d, generator=g, requires_grad=True)
    t = torch.randint(0, V, (N,), generator=g)
    t[::5] = -100
    return h, w, t


@pytest.mark.parametrize("chunk", [1, 5, 37, 1000])
def test_chunked_cross_entropy_equals_full(chunk):
    h, w, t = loss_inputs()
    ref = full_cross_entropy(h, w, t)
    out = chunked_cross_entropy(h, w, t, chunk_tokens=chunk)
    torch.testing.assert_close(out, ref, **TOL)
    # A non-unit upstream gradient (e.g. 1/accumulation steps) scales both gradients.
    for a, b in zip(torch.autograd.grad(out * 0.25, (h, w)), torch.autograd.grad(ref * 0.25, (h, w)), strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_chunked_cross_entropy_without_grad_and_all_ignored():
    h, w, t = loss_inputs()
    with torch.no_grad():
        torch.testing.assert_close(chunked_cross_entropy(h, w, t, 8), full_cross_entropy(h, w, t), **TOL)
    ignored = torch.full_like(t, -100)
    out = chunked_cross_entropy(h, w, ignored, 8)
    assert torch.isnan(out) and torch.isnan(full_cross_entropy(h, w, ignored))
    out.backward()  # as F.cross_entropy: zero gradients, not NaN
    assert torch.all(h.grad == 0) and torch.all(w.grad == 0)


def test_chunked_cross_entropy_matches_full_under_bf16_autocast():
    h, w, t = loss_inputs(N=64, V=50, d=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = full_cross_entropy(h, w, t), chunked_cross_entropy(h, w, t, 16)
    assert out.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)
    for a, b in zip(torch.autograd.grad(out, (h, w)), torch.autograd.grad(ref, (h, w)), strict=True):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-2)


def batch(T, B=2, seed=0, vocab=101):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    targets = torch.randint(0, vocab, (B, T), generator=g)
    targets[0, ::3] = -100
    scales = torch.rand(B, T, 4, generator=g) * 2
    return ids, targets, scales


def loss_and_grads(model, ids, targets, run=None, **kwargs):
    """Loss and gradients; `run` (e.g. the compiled model) does the forward pass."""
    model.zero_grad(set_to_none=True)
    loss = (model if run is None else run)(ids, targets=targets, **kwargs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_training_signal(fast, ref):
    torch.testing.assert_close(fast[0], ref[0], **TOL)
    assert fast[1].keys() == ref[1].keys()
    for name in ref[1]:
        torch.testing.assert_close(fast[1][name], ref[1][name], atol=5e-5, rtol=5e-5, msg=lambda m, n=name: f"{n}: {m}")


BACKPACK_VARIANTS = list(itertools.product([i for i in FAST_SENSE_SUMS if i != "flex"], ["auto", "full", "chunked"]))


@pytest.mark.parametrize("sense_impl,loss_impl", BACKPACK_VARIANTS)
@pytest.mark.parametrize("T", [1, 9])
def test_backpack_fast_paths_equal_reference(sense_impl, loss_impl, T):
    torch.manual_seed(0)
    model = build_model("backpack-micro", **tiny_overrides())
    ids, targets, scales = batch(T)
    model.set_implementation(sense_sum="reference", loss="full")
    for kwargs in ({}, {"sense_scales": scales}):
        ref = loss_and_grads(model, ids, targets, **kwargs)
        with torch.no_grad():
            ref_logits = model(ids, **kwargs)
        model.set_implementation(sense_sum=sense_impl, loss=loss_impl, loss_chunk_tokens=5)
        assert_same_training_signal(loss_and_grads(model, ids, targets, **kwargs), ref)
        with torch.no_grad():
            torch.testing.assert_close(model(ids, **kwargs), ref_logits, **TOL)
        model.set_implementation(sense_sum="reference", loss="full")


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_backpack_flex_forward_equals_reference():
    model = build_model("backpack-micro", **tiny_overrides()).eval()
    ids, targets, scales = batch(11)
    with torch.no_grad():
        ref = model.set_implementation(sense_sum="reference")(ids, targets=targets, sense_scales=scales)
        out = model.set_implementation(sense_sum="flex")(ids, targets=targets, sense_scales=scales)
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("T", [1, 13])
def test_transformer_chunked_loss_equals_full(T):
    torch.manual_seed(0)
    model = build_model("transformer-micro", **tiny_overrides())
    ids, targets, _ = batch(T)
    ref = loss_and_grads(model.set_implementation(loss="full"), ids, targets)
    assert_same_training_signal(loss_and_grads(model.set_implementation(loss="chunked", loss_chunk_tokens=4),
                                               ids, targets), ref)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["backpack", "transformer"])
def test_compiled_model_equals_eager(family):
    """torch.compile (inductor's CPU code here, Triton on a GPU in test_gpu.py) with the default
    implementations: same loss and gradients as the eager reference paths."""
    torch.manual_seed(0)
    model = build_model(f"{family}-micro", **tiny_overrides())
    ids, targets, scales = batch(9)
    kwargs = {"sense_scales": scales} if family == "backpack" else {}
    reference = {"sense_sum": "reference"} if family == "backpack" else {}
    ref = loss_and_grads(model.set_implementation(loss="full", **reference), ids, targets, **kwargs)
    model.set_implementation(**{k: "auto" for k in ("loss", *reference)})
    assert_same_training_signal(loss_and_grads(model, ids, targets, run=torch.compile(model), **kwargs), ref)


def test_defaults_and_bad_names():
    backpack = build_model("backpack-micro", **tiny_overrides())
    assert backpack.implementation() == {"sense_sum": "auto", "loss": "auto", "loss_chunk_tokens": 4096}
    with pytest.raises(ValueError, match="unknown sense_sum implementation 'fast'.*chunked"):
        backpack.set_implementation(sense_sum="fast")
    with pytest.raises(ValueError, match="unknown loss implementation 'fastest'"):
        backpack.set_implementation(loss="fastest")
    with pytest.raises(ValueError, match="loss_chunk_tokens must be at least 1"):
        backpack.set_implementation(loss_chunk_tokens=0)
    transformer = build_model("transformer-micro", **tiny_overrides())
    with pytest.raises(TypeError, match="sense_sum"):
        transformer.set_implementation(sense_sum="chunked")
    # Runtime choices are neither weights nor config: exports stay loadable either way.
    backpack.set_implementation(sense_sum="chunked", loss="full")
    assert "sense_sum" not in backpack.config.to_dict() and "loss" not in backpack.config.to_dict()
    assert not any("impl" in k for k in backpack.state_dict())


def test_bench_cli_smoke(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "backpack_dist.bench", "--models", "backpack-micro,transformer-micro",
           "--d_model", "64", "--n_layer", "2", "--n_head", "2", "--n_senses", "4", "--seq_len", "32",
           "--vocab_size", "1000",
           "--micro_batch", "2", "--steps", "2", "--warmup", "1", "--sense_sum", "auto,chunked",
           "--loss", "full,chunked", "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = report["results"]
    assert len(rows) == 2 * 2 + 2  # backpack: 2 sense sums x 2 losses; transformer: 2 losses
    for row in rows:
        assert row["error"] is None, row
        assert row["tokens_per_s"] > 0 and row["micro_batch"] == 2 and row["seq_len"] == 32
        assert row["mfu"] is None and row["peak_memory_gib"] is None  # CPU: no peak FLOP/s, no CUDA memory
        assert row["flops_per_token"] > 0
    assert {r["size"] for r in report["ratios"]} == {"micro"}
    assert all(r["backpack_over_transformer"] > 0 for r in report["ratios"])
    assert report["device"] == "cpu" and "backpack_dist.bench" in report["command"]
    assert "tokens/s" in result.stdout and "backpack/transformer" in result.stdout


def test_bench_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "backpack_dist.bench", "--models", "gpt-9", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown --models 'gpt-9'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
