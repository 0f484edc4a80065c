"""Sense-weight interventions: scale or zero sense l of a word wherever it occurs, then predict.

A scale spec is "WORD:SENSE=FACTOR" ("nurse:10=0" zeroes sense 10 of every occurrence of
"nurse"); SENSE may be "*" for all senses. The model applies the scales exactly: it multiplies
alpha[l, :, j] for each scaled position j, i.e. sense l of x_j contributes FACTOR times as much
to every later prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

from .words import SenseToolError, encode_text, require_backpack, token_text, word_positions

SYNTAX = "use WORD:SENSE=FACTOR, e.g. nurse:10=0 (SENSE may be * for all senses)"


@dataclasses.dataclass(frozen=True)
class SenseScale:
    word: str
    sense: int | None  # None: every sense
    factor: float


def parse_scale(spec: str) -> SenseScale:
    """One "WORD:SENSE=FACTOR" item. The word is everything before the last ':' (it may hold spaces)."""
    word, colon, rest = str(spec).rpartition(":")
    sense_text, equals, factor_text = rest.partition("=")
    if not colon or not equals or not word.strip():
        raise SenseToolError(f"bad scale {spec!r}: {SYNTAX}")
    try:
        sense = None if sense_text.strip() == "*" else int(sense_text)
    except ValueError:
        raise SenseToolError(f"bad sense index {sense_text!r} in scale {spec!r}: {SYNTAX}") from None
    try:
        factor = float(factor_text)
    except ValueError:
        raise SenseToolError(f"bad factor {factor_text!r} in scale {spec!r}: {SYNTAX}") from None
    if factor != factor or factor in (float("inf"), float("-inf")):
        raise SenseToolError(f"bad factor {factor_text!r} in scale {spec!r}: it must be a finite number")
    return SenseScale(word, sense, factor)


def parse_scales(specs: str | Iterable[str] | None) -> list[SenseScale]:
    """Several specs: a list, or one string with items separated by commas."""
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    return [parse_scale(s) for s in specs]


def sense_scales_for(model, tokenizer, ids: list[int], scales: Iterable[SenseScale]) -> torch.Tensor:
    """The (1, T, k) multiplier tensor for `model(ids, sense_scales=...)`; repeated scales multiply."""
    require_backpack(model, "sense interventions")
    k = model.config.n_senses
    table = torch.ones(1, len(ids), k)
    for s in scales:
        if s.sense is not None and not 0 <= s.sense < k:
            raise SenseToolError(f"sense {s.sense} of {s.word!r} is out of range: this model has senses 0..{k - 1}")
        senses = slice(None) if s.sense is None else s.sense
        for j in word_positions(tokenizer, ids, s.word):
            table[0, j, senses] *= s.factor
    return table


def describe_scales(scales: Iterable[SenseScale]) -> str:
    return ",".join(f"{s.word}:{'*' if s.sense is None else s.sense}={s.factor:g}" for s in scales)


@torch.no_grad()
def next_token_logprobs(model, ids: list[int], sense_scales: torch.Tensor | None = None,
                        scales_name: str = "the sense scales") -> torch.Tensor:
    """log p(next token | ids) as a (vocab_size,) fp64 tensor: ratios of tiny probabilities stay
    exact. SenseToolError naming `scales_name` when the scaled model overflows (inf or NaN logits)."""
    device = model.wte.weight.device
    x = torch.tensor([ids], device=device)
    kwargs = {} if sense_scales is None else {"sense_scales": sense_scales.to(device)}
    logits = model(x, **kwargs)[0, -1].double().cpu()
    if not torch.isfinite(logits).all():
        cause = "its weights" if sense_scales is None else f"{scales_name}; use a smaller factor"
        raise SenseToolError(f"the model's output is not finite (overflow or NaN) with {cause}")
    return logits.log_softmax(-1)


def next_token_probs(model, ids: list[int], sense_scales: torch.Tensor | None = None,
                     scales_name: str = "the sense scales") -> torch.Tensor:
    """p(next token | ids) as a (vocab_size,) fp32 tensor (see next_token_logprobs)."""
    return next_token_logprobs(model, ids, sense_scales, scales_name).exp().float()


def top_predictions(tokenizer, probs: torch.Tensor, top: int = 10) -> list[dict]:
    if top < 1:
        raise SenseToolError(f"top must be at least 1, got {top}")
    values, ids = probs.topk(min(top, probs.numel()))
    return [{"token": token_text(tokenizer, int(i)), "id": int(i), "prob": float(p)}
            for p, i in zip(values, ids, strict=True)]


def predict(model, tokenizer, text: str, scales: Iterable[SenseScale] = (), top: int = 10) -> dict:
    """Next-word predictions for `text`, before and (when scales are given) after the intervention."""
    ids = encode_text(tokenizer, text, model.config.seq_len)
    scales = list(scales)
    result = {"tokens": [token_text(tokenizer, t) for t in ids], "before": top_predictions(
        tokenizer, next_token_probs(model, ids), top)}
    if scales:
        table = sense_scales_for(model, tokenizer, ids, scales)
        probs = next_token_probs(model, ids, table, f"--scale {describe_scales(scales)}")
        result["after"] = top_predictions(tokenizer, probs, top)
    return result
