"""Sense look-up: what each sense of a word says about the vocabulary, read as E^T C(x)_l."""

from __future__ import annotations

import torch

from .words import SenseToolError, require_backpack, token_text, vocabulary_senses, word_tokens


@torch.no_grad()
def sense_scores(model, token_id: int, relative: bool = False) -> torch.Tensor:
    """E^T C(x)_l for every sense l of one token: (k, vocab_size), fp32. relative=True subtracts
    the mean over the token's senses: what sets each sense apart, when all senses share a large
    common part (frequent words on top of every sense)."""
    require_backpack(model)
    senses = vocabulary_senses(model, torch.tensor([token_id]))[0]  # (k, d)
    scores = senses @ model.output_embedding().float().T
    return scores - scores.mean(dim=0, keepdim=True) if relative else scores


def _ranked(tokenizer, scores: torch.Tensor, top: int, largest: bool) -> list[dict]:
    values, ids = scores.topk(top, largest=largest)
    return [{"token": token_text(tokenizer, int(i)), "id": int(i), "score": float(v)}
            for v, i in zip(values, ids, strict=True)]


def lookup_token(model, tokenizer, token_id: int, top: int = 10, relative: bool = False) -> list[dict]:
    """For each sense: its index, the `top` highest- and lowest-scoring vocabulary items
    (relative: see sense_scores)."""
    if top < 1:
        raise SenseToolError(f"top must be at least 1 (how many words to show per sense), got {top}")
    scores = sense_scores(model, token_id, relative)
    top = min(top, scores.shape[-1])
    return [{"sense": l, "top": _ranked(tokenizer, s, top, True), "bottom": _ranked(tokenizer, s, top, False)}
            for l, s in enumerate(scores)]


def lookup_word(model, tokenizer, word: str, top: int = 10, relative: bool = False) -> list[dict]:
    """Look-up of every token of a word ("nurse" is read as " nurse"): one entry per token with
    its text and per-sense tables."""
    require_backpack(model)
    return [{"token": token_text(tokenizer, t), "id": t,
             "senses": lookup_token(model, tokenizer, t, top, relative)}
            for t in word_tokens(tokenizer, word)]
