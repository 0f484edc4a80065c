"""Model sizes from the Backpack paper and the overrides used for tiny test models."""

from __future__ import annotations

import dataclasses
import math

GPT2_VOCAB_SIZE = 50257
EOS_TOKEN_ID = 50256


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str  # "backpack" or "transformer"
    d_model: int
    n_layer: int
    n_head: int
    n_senses: int = 16
    vocab_size: int = GPT2_VOCAB_SIZE  # real tokens; logits are always sliced to this
    # The embedding is padded to a multiple of this for speed; 1 keeps exactly vocab_size rows
    # (OpenAI's GPT-2 imported from transformers has 50257).
    vocab_multiple: int = 8
    seq_len: int = 512
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    # The authors scale layer i's attention logits by 1/(i+1) as well (our models and theirs);
    # OpenAI's GPT-2 does not. Exports from before this setting lack it and were trained with it.
    scale_attn_by_inverse_layer_idx: bool = True

    def __post_init__(self):
        if self.family not in ("backpack", "transformer"):
            raise ValueError(f"unknown model family {self.family!r}: use 'backpack' or 'transformer'")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.vocab_multiple < 1:
            raise ValueError(f"vocab_multiple must be at least 1, got {self.vocab_multiple}")
        if self.family == "backpack" and self.d_model % self.n_senses:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_senses={self.n_senses}")

    @property
    def padded_vocab_size(self) -> int:
        return math.ceil(self.vocab_size / self.vocab_multiple) * self.vocab_multiple

    @property
    def is_backpack(self) -> bool:
        return self.family == "backpack"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**d)


# d_model, n_layer, n_head per size (spec table); the Backpack's contextualization
# network is exactly the same-size Transformer.
SIZES = {
    "micro": dict(d_model=384, n_layer=6, n_head=6),
    "mini": dict(d_model=640, n_layer=8, n_head=8),
    "small": dict(d_model=768, n_layer=12, n_head=12),
}
MODEL_NAMES = tuple(f"{family}-{size}" for family in ("backpack", "transformer") for size in SIZES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOverrides:
    """The model settings a command may override (tiny test models, other contexts): the one list
    that training, its resume check, the bench and the tests read."""

    d_model: int | None = None
    """Model override: width."""
    n_layer: int | None = None
    """Model override: layers."""
    n_head: int | None = None
    """Model override: attention heads."""
    n_senses: int | None = None
    """Model override: senses per word (Backpack)."""
    vocab_size: int | None = None
    """Model override: vocabulary size (at least the data's)."""
    seq_len: int | None = None
    """Model override: context length."""
    dropout: float | None = None
    """Model override: dropout in [0, 1)."""

    @property
    def model_overrides(self) -> dict:
        """The overrides that were given."""
        return {k: getattr(self, k) for k in OVERRIDABLE if getattr(self, k) is not None}

    def check_overrides(self) -> None:
        """For __post_init__: the ranges that need no model (sizes are checked by ModelConfig)."""
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")


OVERRIDABLE = tuple(f.name for f in dataclasses.fields(ModelOverrides))


def model_config(name: str, **overrides) -> ModelConfig:
    """The config for one of the six named models, with optional overrides for tiny runs."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")
    bad = set(overrides) - set(OVERRIDABLE)
    if bad:
        raise ValueError(f"cannot override {sorted(bad)}: overridable fields are {', '.join(OVERRIDABLE)}")
    family, size = name.split("-")
    fields = dict(SIZES[size])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(family=family, **fields)
