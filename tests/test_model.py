import math

import pytest
import torch
from common import tiny_overrides

from backpack_dist.model import MODEL_NAMES, build_model, model_config
from backpack_dist.model.backpack import causal_softmax_fp32, distinct_tokens
from backpack_dist.model.flops import parameter_counts, sense_sum_flops, training_flops_per_token

# The spec's recount column (vocabulary padded to 50264, tied embeddings).
RECOUNT = {
    "backpack-micro": 41.7e6, "backpack-mini": 103.9e6, "backpack-small": 170.1e6,
    "transformer-micro": 30.2e6, "transformer-mini": 71.9e6, "transformer-small": 124.0e6,
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builds_on_meta_with_spec_parameter_count(name):
    with torch.device("meta"):
        model = build_model(name)
    total = parameter_counts(model)["total"]
    assert abs(total - RECOUNT[name]) / RECOUNT[name] < 0.01
    assert model.config.padded_vocab_size == 50264


def test_transformer_flops_match_6n_plus_attention():
    cfg = model_config("transformer-small")
    with torch.device("meta"):
        model = build_model("transformer-small")
    n = parameter_counts(model)["non_embedding"]
    # 6N over the matmul weights (biases/LN are negligible) + output layer + attention.
    expected = 6 * n + 6 * cfg.d_model * cfg.vocab_size + 12 * cfg.n_layer * cfg.d_model * cfg.seq_len
    assert training_flops_per_token(cfg) == pytest.approx(expected, rel=0.01)


def test_backpack_costs_more_than_its_transformer():
    assert training_flops_per_token(model_config("backpack-micro")) > training_flops_per_token(
        model_config("transformer-micro"))
    partial = training_flops_per_token(model_config("backpack-micro"), sense_fraction=0.3)
    assert partial < training_flops_per_token(model_config("backpack-micro"))


def test_unknown_model_and_bad_override_are_clear():
    with pytest.raises(ValueError, match="unknown model 'gpt-9'"):
        build_model("gpt-9")
    with pytest.raises(ValueError, match="cannot override"):
        build_model("backpack-micro", n_embd=3)
    with pytest.raises(ValueError, match="not divisible by n_senses"):
        build_model("backpack-micro", d_model=30, n_head=2, n_senses=4)


def test_per_layer_attention_scaling():
    model = build_model("transformer-micro", **tiny_overrides(n_layer=3))
    head_dim = 16
    for i, block in enumerate(model.body.blocks):
        assert block.attn.scale == pytest.approx(1 / (math.sqrt(head_dim) * (i + 1)))


@pytest.mark.parametrize("family", ["backpack", "transformer"])
def test_causality(family):
    torch.manual_seed(0)
    model = build_model(f"{family}-micro", **tiny_overrides()).eval()
    x = torch.randint(0, 101, (2, 20))
    t = 9
    y = x.clone()
    y[:, t + 1 :] = torch.randint(0, 101, (2, 20 - t - 1))
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def naive_sense_sum(model, x):
    """Per-position sense vectors (no unique/gather) and a materialised alpha."""
    C = model.sense_network(model.wte(x))  # (B, T, k, d), one computation per position
    alpha = model.sense_weights(x)  # (B, k, T, T)
    return torch.einsum("blij,bjld->bid", alpha, C)


def test_efficient_sense_sum_equals_naive():
    torch.manual_seed(1)
    model = build_model("backpack-micro", **tiny_overrides()).eval()
    x = torch.randint(0, 101, (3, 24))
    with torch.no_grad():
        fast = model.final_hidden(x)
        slow = naive_sense_sum(model, x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_sense_vectors_per_distinct_token_equal_per_position():
    torch.manual_seed(2)
    model = build_model("backpack-micro", **tiny_overrides()).eval()
    x = torch.randint(0, 10, (2, 24))  # many repeats
    with torch.no_grad():
        gathered = model.sense_vectors(x)
        per_position = model.sense_network(model.wte(x))
    assert gathered.shape == (2, 24, 4, 32)
    torch.testing.assert_close(gathered, per_position, atol=1e-6, rtol=1e-6)


def test_logits_decompose_over_senses():
    torch.manual_seed(3)
    model = build_model("backpack-micro", **tiny_overrides()).eval()
    x = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        logits = model(x)
        C = model.sense_vectors(x)
        alpha = model.sense_weights(x)
        E = model.output_embedding()
        summed = sum((alpha[:, l] @ C[:, :, l]) @ E.T for l in range(4))
    torch.testing.assert_close(logits, summed, atol=1e-5, rtol=1e-5)


def test_sense_weights_causal_and_normalised():
    model = build_model("backpack-micro", **tiny_overrides()).eval()
    x = torch.randint(0, 101, (2, 12))
    with torch.no_grad():
        alpha = model.sense_weights(x)
    assert alpha.shape == (2, 4, 12, 12) and alpha.dtype == torch.float32
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 4, 12))
    assert torch.all(alpha.triu(diagonal=1) == 0)


def test_softmax_is_fp32_for_bf16_inputs():
    q = torch.randn(1, 2, 5, 4, dtype=torch.bfloat16)
    alpha = causal_softmax_fp32(q, q)
    assert alpha.dtype == torch.float32


def test_initialisation_statistics():
    torch.manual_seed(4)
    model = build_model("backpack-micro", d_model=256, n_layer=4, n_head=4, n_senses=4, vocab_size=2000, seq_len=64)
    resid_std = 0.02 / math.sqrt(2 * 4)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.body.wpe.weight.std().item() == pytest.approx(0.02, rel=0.05)
    block = model.body.blocks[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for proj in (block.attn.c_proj, block.mlp.c_proj, model.sense_network.mlp_1.c_proj,
                 model.sense_network.mlp_2.c_proj):
        assert proj.weight.std().item() == pytest.approx(resid_std, rel=0.05)
        assert torch.all(proj.bias == 0)
    assert model.sense_network.mlp_2.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for ln in (block.ln_1, model.body.ln_f, model.sense_network.ln_0, model.sense_network.ln_2):
        assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)


@pytest.mark.parametrize("family", ["backpack", "transformer"])
def test_tied_embedding(family):
    model = build_model(f"{family}-micro", **tiny_overrides())
    names = [n for n, _ in model.named_parameters()]
    assert sum("wte" in n for n in names) == 1
    assert model.output_embedding().data_ptr() == model.wte.weight.data_ptr()
    # A gradient through the output layer alone reaches the embedding.
    model.logits_from_hidden(torch.randn(1, 1, 32)).sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad[:101].abs().sum() > 0


@pytest.mark.parametrize("family", ["backpack", "transformer"])
def test_padded_vocabulary_is_never_predicted(family):
    model = build_model(f"{family}-micro", **tiny_overrides(vocab_size=101))
    assert model.config.padded_vocab_size == 104 and model.wte.weight.shape[0] == 104
    logits = model(torch.randint(0, 101, (1, 8)))
    assert logits.shape[-1] == 101  # the 3 padded rows have no logit, so no probability


@pytest.mark.parametrize("family", ["backpack", "transformer"])
def test_bf16_forward_backward_finite(family):
    torch.manual_seed(5)
    model = build_model(f"{family}-micro", **tiny_overrides(dropout=0.1)).to(torch.bfloat16)
    x = torch.randint(0, 101, (2, 24))
    loss = model(x[:, :-1], targets=x[:, 1:])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_intervention_scales_are_exact():
    torch.manual_seed(6)
    model = build_model("backpack-micro", **tiny_overrides()).eval()
    x = torch.randint(0, 101, (1, 10))
    scales = torch.ones(1, 10, 4)
    scales[0, 3, 2] = 0.0
    with torch.no_grad():
        base, edited = model(x), model(x, sense_scales=scales)
        C, alpha = model.sense_vectors(x), model.sense_weights(x)
        contribution = (alpha[0, 2, :, 3:4] * C[0, 3, 2][None]) @ model.output_embedding().T
    torch.testing.assert_close(edited - base, -contribution[None], atol=1e-5, rtol=1e-5)


def test_executed_flops_count_the_padded_output_width():
    from backpack_dist.model.flops import executed_training_flops_per_token

    cfg = model_config("transformer-small")
    extra = executed_training_flops_per_token(cfg) - training_flops_per_token(cfg)
    assert extra == pytest.approx(6 * cfg.d_model * (cfg.padded_vocab_size - cfg.vocab_size))


def test_passed_in_distinct_tokens_equal_in_model_path_exactly():
    """The loop's CPU-computed distinct tokens give the same loss and gradients, bit for bit."""
    model = build_model("backpack-micro", **tiny_overrides())
    x, y = torch.randint(0, 10, (2, 9)), torch.randint(0, 10, (2, 9))

    def loss_and_grads(**kwargs):
        torch.manual_seed(3)  # the same dropout masks in both runs
        model.zero_grad()
        loss = model(x, targets=y, **kwargs)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(), loss_and_grads(unique_tokens=distinct_tokens(x))
    assert torch.equal(loss_a, loss_b) and grads_a.keys() == grads_b.keys()
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    assert any(g.abs().sum() > 0 for g in grads_a.values())


def test_sense_sum_flops_counts_repeated_qk_per_value_chunk():
    cfg = model_config("backpack-small")
    ratio = {impl: (f := sense_sum_flops(impl, cfg, 32, 512))["executed"] / f["defined"]
             for impl in ("sdpa", "chunked", "chunked_wide", "flex")}
    assert ratio == pytest.approx({"sdpa": 1.0, "chunked": 32 / 17, "chunked_wide": 22 / 17, "flex": 19 / 17})
