"""Reading an HF folder's weights and matching them, name by name and shape by shape, to a config."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..model import ModelConfig
from .layout import aliases, expected_shapes, is_buffer, model_prefix

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = (SAFETENSORS, PYTORCH_BIN, *INDEXES)


def _load_file(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated files, pickles that are not plain tensors, ...
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors, pytorch_model.bin or their sharded index."""
    for index in INDEXES:
        if (folder / index).is_file():
            try:
                shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as e:
                raise ValueError(f"{folder / index} is not a weight index ({e})") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise ValueError(f"{folder} lacks {len(missing)} of the shards its {index} lists, e.g. {missing[0]}")
            state = {}
            for shard in shards:
                state.update(_load_file(folder / shard))
            return state
    for name in (SAFETENSORS, PYTORCH_BIN):
        if (folder / name).is_file():
            state = _load_file(folder / name)
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError(f"{folder / name} holds no state dict of tensors")
            return state
    raise ValueError(f"{folder} has no weights ({SAFETENSORS}, {PYTORCH_BIN} or a sharded index)")


def _strip_prefix(raw: dict, prefix: str) -> dict:
    """Names without the LM head model's prefix; a bare body (GPT2Model, as OpenAI's gpt2 is
    stored on the Hub) has none."""
    if not any(k.startswith(prefix) for k in raw):
        return dict(raw)
    return {k.removeprefix(prefix): v for k, v in raw.items()}


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def to_our_state_dict(raw: dict, cfg: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    """Our state dict from an HF state dict, or ValueError naming what is missing, extra or
    shaped otherwise than the config says."""
    prefix = model_prefix(cfg.is_backpack)
    named = _strip_prefix(raw, prefix)
    table = expected_shapes(cfg)
    copies = aliases(cfg.is_backpack)
    missing = [n for n in table if n not in named]
    if missing:
        raise ValueError(f"{where} is missing {len(missing)} of the {len(table)} weights its config needs, "
                         f"e.g. {prefix}{missing[0]}")
    extra = [n for n in named if n not in table and n not in copies and not is_buffer(n)]
    if extra:
        raise ValueError(f"{where} holds {len(extra)} weights this model type does not have, e.g. {extra[0]}; "
                         "is it another architecture?")
    state = {}
    for name, (ours, transposed, shape) in table.items():
        tensor = named[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{where}: {prefix}{name} has shape {_shape(tensor.shape)} but its config "
                             f"(n_embd={cfg.d_model}, n_layer={cfg.n_layer}, vocab_size and n_positions) "
                             f"needs {_shape(shape)}")
        tensor = tensor.to(torch.float32)
        state[ours] = (tensor.T if transposed else tensor).contiguous()
    for name, original in copies.items():
        if name in named and not torch.equal(named[name].to(torch.float32), named[original].to(torch.float32)):
            raise ValueError(f"{where}: {name} differs from {prefix}{original}; an untied output layer or "
                             "embedding copy is not this format (ours ties them)")
    return state
