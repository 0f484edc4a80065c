"""Exported models: one consolidated `model.safetensors` plus `config.json` (and the tokenizer
file when it is not GPT-2's). Every tool after training (eval, senses, serve) loads through
`load_pretrained`, which also accepts a training run directory or one of its checkpoints, and a
transformers folder (backpack_dist/convert)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import check_replaceable, replacing_folder
from .model import ModelConfig, model_from_config
from .tokenizer import GPT2, TOKENIZER_FILE, load_tokenizer, tokenizer_fingerprint

FORMAT = "backpack-dist/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def check_export_target(out_dir) -> Path:
    """An export may only replace an earlier export: never a run, a data folder or a user's files."""
    return check_replaceable(out_dir, "export", lambda folder, entries: (folder / CONFIG).is_file()
                             and entries <= {CONFIG, WEIGHTS, TOKENIZER_FILE})


def save_pretrained(state_dict: dict, config: ModelConfig, out_dir, *, model_name: str, tokenizer: str = GPT2,
                    **metadata) -> Path:
    """Write an export atomically: a crash leaves either the old folder or the new one, never half.
    Only an empty folder or an earlier export is replaced (check_export_target)."""
    out_dir = check_export_target(out_dir)
    with replacing_folder(out_dir) as tmp:
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
        save_file(tensors, tmp / WEIGHTS, metadata={"format": FORMAT})
        tokenizer_entry = GPT2
        if tokenizer != GPT2:
            shutil.copyfile(tokenizer, tmp / TOKENIZER_FILE)
            tokenizer_entry = TOKENIZER_FILE
        info = {"format": FORMAT, "model_name": model_name, "model": config.to_dict(), "tokenizer": tokenizer_entry,
                "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), **metadata}
        (tmp / CONFIG).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir


def read_export_info(path) -> dict:
    path = Path(path)
    cfg_file = path / CONFIG
    if not cfg_file.is_file() or not (path / WEIGHTS).is_file():
        raise ValueError(f"{path} is not an exported model (needs {CONFIG} and {WEIGHTS}); "
                         "export a run with: python -m backpack_dist.export RUN --out DIR")
    try:
        info = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_file} is not valid JSON ({e}); export the model again") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"{cfg_file} has format {found!r}, expected {FORMAT!r}")
    if not isinstance(info.get("model"), dict):
        raise ValueError(f"{cfg_file} has no 'model' settings (the model's sizes); export the model again")
    return info


def tokenizer_spec(path, info: dict) -> str:
    """The tokenizer an export was trained with: "gpt2" or the path of its bundled file."""
    entry = info.get("tokenizer", GPT2)
    return GPT2 if entry == GPT2 else str(Path(path) / entry)


def load_state(path):
    """(state_dict, ModelConfig, info, tokenizer spec) from an export directory, a training run
    directory (its newest complete checkpoint), one checkpoint directory of a run, or a
    transformers folder (the authors' Backpack or GPT2LMHeadModel, converted in memory)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist")
    from .convert.read_hf import is_hf_folder, read_hf_folder

    if is_hf_folder(path):
        return read_hf_folder(path)
    if not (path / WEIGHTS).is_file():
        from .checkpoint import export_in_memory  # DeepSpeed is imported only when needed

        return export_in_memory(path)
    info = read_export_info(path)
    try:
        config = ModelConfig.from_dict(info["model"])
    except TypeError as e:  # a missing or misspelt size
        raise ValueError(f"{path / CONFIG} has bad 'model' settings ({e}); export the model again") from None
    try:
        state_dict = load_file(path / WEIGHTS)
    except SafetensorError as e:  # truncated or overwritten weights
        raise ValueError(f"{path / WEIGHTS} is damaged ({e}); export the model again") from None
    return state_dict, config, info, tokenizer_spec(path, info)


def load_pretrained(path, device="cpu"):
    """(model in eval mode, tokenizer, info) from anything load_state reads."""
    path = Path(path)
    state_dict, config, info, tokenizer = load_state(path)
    model = model_from_config(config)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"checkpoint {path} does not match its config: {str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match its config: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return model.to(device).eval(), load_tokenizer(tokenizer), info
