"""Parameter counts and training FLOPs per token (PaLM's convention: 2 FLOPs per
multiply-add, backward = 2x forward, attention counted over the full T x T)."""

from __future__ import annotations

from torch import nn

from .config import ModelConfig


def parameter_counts(model: nn.Module) -> dict:
    """Total and non-embedding (minus token and position embeddings) parameter counts."""
    total = sum(p.numel() for p in model.parameters())  # tied weights counted once
    embedding = model.body.wte.weight.numel() + model.body.wpe.weight.numel()
    return {"total": total, "non_embedding": total - embedding}


def forward_flops_per_token(cfg: ModelConfig, sense_fraction: float = 1.0, output_width: int | None = None) -> float:
    """Forward FLOPs per token. sense_fraction scales the sense network: 1.0 is the
    architecture's definition (once per position); when it runs once per distinct token of a
    batch, the real work is (distinct tokens / tokens) of that. output_width: the output layer's
    width, the real vocabulary by default (model FLOPs)."""
    d, L, T = cfg.d_model, cfg.n_layer, cfg.seq_len
    V = cfg.vocab_size if output_width is None else output_width
    flops = L * (2 * 12 * d * d + 2 * 2 * T * d)  # block matmuls + QK^T and AV
    flops += 2 * d * V  # tied output layer
    if cfg.is_backpack:
        k = cfg.n_senses
        sense_net = 2 * (8 * d * d + 4 * d * d + 4 * d * k * d)  # MLP1 + MLP2
        flops += sense_fraction * sense_net
        flops += 2 * 2 * d * d  # sense query/key projection
        flops += 2 * T * d + 2 * T * k * d  # QK^T over k heads of d/k, then alpha @ C (width d per head)
    return flops


def training_flops_per_token(cfg: ModelConfig, sense_fraction: float = 1.0) -> float:
    return 3 * forward_flops_per_token(cfg, sense_fraction)


def executed_training_flops_per_token(cfg: ModelConfig, sense_fraction: float = 1.0) -> float:
    """The FLOPs the step executes rather than the model's (MFU's numerator): the output layer at
    the padded width the loss multiplies by (model/loss.py), the sense network's share as given."""
    return 3 * forward_flops_per_token(cfg, sense_fraction, output_width=cfg.padded_vocab_size)


def batch_flops(cfg: ModelConfig, input_ids, unique_ids=None) -> float:
    """Training FLOPs of one batch of token ids: a Backpack's sense network runs once per distinct
    token of the batch, the rest once per token. unique_ids: the batch's distinct ids if known."""
    if cfg.is_backpack and unique_ids is None:
        unique_ids = input_ids.unique()
    distinct = unique_ids.numel() / input_ids.numel() if cfg.is_backpack else 1.0
    return training_flops_per_token(cfg, distinct) * input_ids.numel()


def sense_sum_flops(impl: str, cfg: ModelConfig, batch: int, seq_len: int) -> dict:
    """Training FLOPs of one batch's sense sum: "defined" (QK^T once over k heads of d/k, then
    alpha @ C at width d per head) and "executed" by `impl`, which repeats QK^T once per value
    chunk. Same convention as above (full T x T, backward = 2x forward), so only the chunk count
    changes the ratio: at Backpack-Small chunked/chunked_loop 32/17 = 1.88, chunked_wide 22/17 =
    1.29, flex 19/17 = 1.12, sdpa 1.0 ("auto" counted as what it resolves to on a GPU in bf16)."""
    from .sense_sum import flex_value_width, wide_value_width

    d, k, T = cfg.d_model, cfg.n_senses, seq_len
    value_chunks = {"sdpa": 1, "reference": 1, "chunked": k, "auto": k, "chunked_loop": k,
                    "chunked_wide": d // wide_value_width(d), "flex": d // flex_value_width(d)}[impl]
    per_token = {"defined": 2 * T * d + 2 * T * k * d, "executed": value_chunks * 2 * T * d + 2 * T * k * d}
    return {name: 3 * flops * batch * T for name, flops in per_token.items()}
