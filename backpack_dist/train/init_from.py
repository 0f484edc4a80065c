"""--init_from SRC: start a run from trained weights (an export, a run, a checkpoint or a
transformers folder such as a converted Backpack or GPT-2) instead of a random initialisation.

The sizes come from SRC; --model only names the run and must be SRC's family; --dropout may
change. A resumed run loads its own checkpoint over these weights, but still reads SRC for them.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ..model import ModelConfig, model_config
from .config import ConfigError, TrainConfig

SIZE_FLAGS = ("d_model", "n_layer", "n_head", "n_senses", "vocab_size", "seq_len")


def check_init_flags(cfg: TrainConfig) -> None:
    """validate()'s part: the sizes are SRC's, so size overrides contradict it."""
    if cfg.init_from is None:
        return
    given = [f"--{k}" for k in SIZE_FLAGS if getattr(cfg, k) is not None]
    if given:
        raise ConfigError(f"--init_from {cfg.init_from} takes the model's sizes from there; drop {', '.join(given)}")


def source_path(source: str) -> str:
    """RUN@STEP is RUN/checkpoints/step_<STEP> (a decay branch from a run's stable phase); else as given."""
    match = re.fullmatch(r"(.+)@(\d+)", source)
    if match is None or Path(source).exists():
        return source
    from ..checkpoint import checkpoints_dir, tag_for_step

    path = checkpoints_dir(match[1]) / tag_for_step(int(match[2]))
    if not path.is_dir():
        have = sorted(p.name for p in checkpoints_dir(match[1]).glob("step_*"))
        raise ConfigError(f"--init_from {source}: {path} does not exist; "
                          f"the run has {', '.join(have) or 'no checkpoints'}")
    return str(path)


def initial_weights(cfg: TrainConfig, data_info: dict) -> tuple[dict, ModelConfig]:
    """(state dict, model config) of SRC, checked against --model and the data's tokenizer."""
    from ..pretrained import load_state

    source = source_path(cfg.init_from)
    try:
        state_dict, source_cfg, info, _tokenizer = load_state(source)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"--init_from: {e}") from None
    family = model_config(cfg.model).family
    if source_cfg.family != family:
        raise ConfigError(f"--init_from {cfg.init_from} is a {source_cfg.family}, --model {cfg.model} a {family}; "
                          f"pass --model {source_cfg.family}-small (its sizes come from --init_from)")
    source_tokenizer = info.get("tokenizer_fingerprint")
    if source_tokenizer is not None and source_tokenizer != data_info["tokenizer_fingerprint"]:
        raise ConfigError(f"--init_from {cfg.init_from} was trained with another tokenizer than the data in "
                          f"{cfg.data_dir} (fingerprints {source_tokenizer} and {data_info['tokenizer_fingerprint']}); "
                          "prepare the data with the model's tokenizer")
    if cfg.dropout is not None:
        source_cfg = dataclasses.replace(source_cfg, dropout=cfg.dropout)
    return state_dict, source_cfg
