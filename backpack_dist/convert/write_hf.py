"""Our model as a transformers folder: a Transformer as GPT2LMHeadModel, a Backpack in the
authors' format. The inverse-layer attention scaling is folded into the query weights and the
flag written off, so the folder computes our function under every attention implementation."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import check_replaceable, replacing_folder
from ..model import ModelConfig
from ..tokenizer import load_tokenizer
from .hf_config import from_model_config
from .hf_tokenizer import TOKENIZER_FILES, write_tokenizer
from .layout import aliases, fold_inverse_layer_scale, hf_name, model_prefix
from .read_hf import MARKER
from .weights import PYTORCH_BIN, SAFETENSORS

FORMAT = "backpack-dist-hf/1"
OUR_FILES = {"config.json", SAFETENSORS, PYTORCH_BIN, *TOKENIZER_FILES}


def check_hf_target(out) -> Path:
    """--out may be new, empty or an earlier to-hf output: never a run, an export or a user's files."""
    def is_ours(folder: Path, entries: set[str]) -> bool:
        try:
            marker = json.loads((folder / "config.json").read_text()).get(MARKER, {}).get("format")
        except (OSError, ValueError, AttributeError):
            return False
        return marker == FORMAT and entries <= OUR_FILES

    return check_replaceable(out, "to-hf output", is_ours)


def hf_state_dict(state_dict: dict, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF names and orientation, scaling folded in; a Transformer keeps only its real tokens' rows."""
    folded = fold_inverse_layer_scale(state_dict, cfg)
    prefix = model_prefix(cfg.is_backpack)
    out = {}
    for ours, tensor in folded.items():
        name, transposed = hf_name(ours, cfg.is_backpack)
        tensor = tensor.detach().to("cpu", torch.float32)
        if ours == "body.wte.weight" and not cfg.is_backpack:
            tensor = tensor[: cfg.vocab_size]
        out[prefix + name] = (tensor.T if transposed else tensor).contiguous()
    if cfg.is_backpack:
        # The authors' state dict also names the tied output layer and the embeddings twice; in a
        # torch.save file the copies share storage and cost nothing.
        for alias, original in aliases(True).items():
            out[alias if alias == "lm_head.weight" else prefix + alias] = out[prefix + original]
    return out


def write_hf(state_dict: dict, cfg: ModelConfig, tokenizer: str, out, **provenance) -> Path:
    """Write the folder atomically (a crash leaves the old folder or the new one)."""
    out = check_hf_target(out)
    with replacing_folder(out) as tmp:
        tensors = hf_state_dict(state_dict, cfg)
        if cfg.is_backpack:
            # The authors' release is a torch.save file with those shared copies; safetensors
            # refuses shared tensors, and transformers' save_pretrained would fail on their class.
            torch.save(tensors, tmp / PYTORCH_BIN)
        else:
            from safetensors.torch import save_file

            save_file(tensors, tmp / SAFETENSORS, metadata={"format": "pt"})  # transformers wants "pt"
        config = from_model_config(cfg, load_tokenizer(tokenizer).eot_token)
        config[MARKER] = {"format": FORMAT, **provenance}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_tokenizer(tmp, tokenizer, cfg.seq_len)
    return out
