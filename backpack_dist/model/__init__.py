"""The six models of the Backpack paper: build_model(name, **overrides)."""

from .backpack import BackpackLM
from .config import MODEL_NAMES, ModelConfig, model_config
from .transformer import TransformerLM


def model_from_config(cfg: ModelConfig):
    return BackpackLM(cfg) if cfg.is_backpack else TransformerLM(cfg)


def build_model(name: str, **overrides):
    """One of backpack-{micro,mini,small} or transformer-{micro,mini,small}; overrides
    (d_model, n_layer, n_head, n_senses, vocab_size, seq_len, dropout) make tiny models."""
    return model_from_config(model_config(name, **overrides))


__all__ = ["BackpackLM", "TransformerLM", "ModelConfig", "MODEL_NAMES", "build_model", "model_config",
           "model_from_config"]
