"""config.json of transformers' GPT-2 and of the authors' Backpack <-> our ModelConfig.

Missing keys take the defaults of the class that would read the file (GPT2Config, or the
authors' BackpackGPT2Config: vocabulary 50264, 512 positions, 16 senses, inverse-layer scaling).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..model import ModelConfig

GPT2_TYPE = "gpt2"
BACKPACK_TYPE = "backpack-gpt2"
_GPT2_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                      activation_function="gelu_new", resid_pdrop=0.1, layer_norm_epsilon=1e-5,
                      scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, add_cross_attention=False,
                      tie_word_embeddings=True)
_BACKPACK_DEFAULTS = {**_GPT2_DEFAULTS, "vocab_size": 50264, "n_positions": 512, "num_senses": 16,
                      "sense_intermediate_scale": 4, "scale_attn_by_inverse_layer_idx": True}
DEFAULTS = {GPT2_TYPE: _GPT2_DEFAULTS, BACKPACK_TYPE: _BACKPACK_DEFAULTS}
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")  # GPT-2's tanh approximation, which our MLPs use


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object")
    return config


def is_levanter(config: dict) -> bool:
    """Levanter's Backpack export: a plain PretrainedConfig (model_type '') with num_senses, and an
    auto_map copied from its own Hub code. Its model divides the output by num_senses."""
    auto_map = json.dumps(config.get("auto_map", {})).lower()
    return ("num_senses" in config and not config.get("model_type")) or "levanter" in auto_map


def model_type(config: dict, where: str) -> str:
    if is_levanter(config):
        raise ValueError(f"{where} is Levanter's Backpack format (num_senses with model_type "
                         f"{config.get('model_type', '')!r} or Levanter's auto_map), whose output is divided by "
                         f"num_senses; only the authors' format ({BACKPACK_TYPE!r}) and GPT2LMHeadModel "
                         f"({GPT2_TYPE!r}) convert")
    kind = config.get("model_type")
    if kind not in DEFAULTS:
        raise ValueError(f"{where} has model_type {kind!r}: only {GPT2_TYPE!r} (GPT2LMHeadModel) and "
                         f"{BACKPACK_TYPE!r} (the authors' Backpack) convert")
    return kind


def vocab_multiple(n_vocab: int, rows: int) -> int:
    """The vocab_multiple whose padding of n_vocab real tokens gives exactly `rows` embedding rows."""
    return next(m for m in (1, 8, 64, 128, rows) if math.ceil(n_vocab / m) * m == rows)


def to_model_config(config: dict, n_vocab: int, where: str) -> ModelConfig:
    """Our settings for an HF config; ValueError for what our models cannot compute."""
    kind = model_type(config, where)
    c = {**DEFAULTS[kind], **{k: v for k, v in config.items() if v is not None or k == "n_inner"}}
    unsupported = []
    if c["activation_function"] not in TANH_GELU:
        unsupported.append(f"activation_function {c['activation_function']!r} (ours: gelu_new)")
    if c["n_inner"] not in (None, 4 * c["n_embd"]):
        unsupported.append(f"n_inner {c['n_inner']} (ours: 4 x n_embd)")
    if not c["scale_attn_weights"]:
        unsupported.append("scale_attn_weights false")
    if c["add_cross_attention"]:
        unsupported.append("cross-attention")
    if c["tie_word_embeddings"] is False:
        unsupported.append("untied word embeddings")
    if kind == BACKPACK_TYPE and c["sense_intermediate_scale"] != 4:
        unsupported.append(f"sense_intermediate_scale {c['sense_intermediate_scale']} (ours: 4)")
    if unsupported:
        raise ValueError(f"{where} has settings our models do not implement: {', '.join(unsupported)}")
    rows = c["vocab_size"]
    if not isinstance(rows, int) or rows < n_vocab:
        raise ValueError(f"{where} has vocab_size {rows}, fewer than its tokenizer's {n_vocab} tokens")
    try:
        return ModelConfig(
            family="backpack" if kind == BACKPACK_TYPE else "transformer",
            d_model=c["n_embd"], n_layer=c["n_layer"], n_head=c["n_head"],
            **({"n_senses": c["num_senses"]} if kind == BACKPACK_TYPE else {}),
            vocab_size=n_vocab, vocab_multiple=vocab_multiple(n_vocab, rows), seq_len=c["n_positions"],
            dropout=float(c["resid_pdrop"]), layer_norm_eps=float(c["layer_norm_epsilon"]),
            scale_attn_by_inverse_layer_idx=bool(c["scale_attn_by_inverse_layer_idx"]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def from_model_config(cfg: ModelConfig, eos_token_id: int) -> dict:
    """config.json for our model, its attention scaling folded into the weights (flag off)."""
    config = {
        "model_type": BACKPACK_TYPE if cfg.is_backpack else GPT2_TYPE,
        "architectures": ["BackpackGPT2LMHeadModel" if cfg.is_backpack else "GPT2LMHeadModel"],
        # A Transformer keeps only real tokens (padded rows would get probability in transformers);
        # a Backpack keeps the authors' padded vocabulary (their release has 50264 rows).
        "vocab_size": cfg.padded_vocab_size if cfg.is_backpack else cfg.vocab_size,
        "n_positions": cfg.seq_len, "n_embd": cfg.d_model, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
        "n_inner": None, "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.layer_norm_eps, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "bos_token_id": eos_token_id, "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }
    if cfg.is_backpack:
        config.update(num_senses=cfg.n_senses, sense_intermediate_scale=4)
    return config
