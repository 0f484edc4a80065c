"""An HF folder (the authors' Backpack or transformers' GPT2LMHeadModel) as our model's weights."""

from __future__ import annotations

import json
from pathlib import Path

from ..model import ModelConfig
from ..model.config import MODEL_NAMES, model_config
from ..tokenizer import load_tokenizer, tokenizer_fingerprint
from .hf_config import read_config, to_model_config
from .hf_tokenizer import folder_tokenizer
from .weights import WEIGHT_FILES, read_weights, to_our_state_dict

MARKER = "backpack_dist"  # the key our to-hf adds to config.json: where the weights came from


def is_hf_folder(path) -> bool:
    """A transformers folder (config.json with a model_type and no format of ours)?"""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "format" not in config and (
        "model_type" in config or "architectures" in config or "num_senses" in config)


def paper_name(cfg: ModelConfig) -> str | None:
    """The paper model these sizes are (the authors' release is Backpack-Small)."""
    keys = ("family", "d_model", "n_layer", "n_head", "n_senses", "vocab_size", "seq_len")
    return next((n for n in MODEL_NAMES if all(getattr(model_config(n), k) == getattr(cfg, k) for k in keys)), None)


def read_hf_folder(folder, hub_id: str | None = None):
    """(state_dict, ModelConfig, info, tokenizer spec), as load_pretrained reads an export."""
    folder = Path(folder)
    where = hub_id or str(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{where} has no config.json: not a transformers model folder")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"{where} has no weights ({', '.join(WEIGHT_FILES[:2])} or a sharded index)")
    config = read_config(folder)
    tokenizer = folder_tokenizer(folder)
    model_cfg = to_model_config(config, load_tokenizer(tokenizer).n_vocab, where)
    state_dict = to_our_state_dict(read_weights(folder), model_cfg, where)
    ours = config.get(MARKER) if isinstance(config.get(MARKER), dict) else {}
    info = {"model_name": ours.get("model_name") or paper_name(model_cfg) or config["model_type"],
            "step": ours.get("step"), "source": hub_id or str(folder.absolute()),
            "source_format": config["model_type"], "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}
    return state_dict, model_cfg, info, tokenizer
