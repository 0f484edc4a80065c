"""Shared helpers of the sense tools: which models they accept and how a "word" maps to tokens.

A word such as "nurse" means every occurrence of its tokens with or without a leading space
(" nurse" is one GPT-2 token, "nurse" another); a word of several tokens means all of them.
"""

from __future__ import annotations

import torch

from ..cli import UsageError

SenseToolError = UsageError  # bad input to a sense tool; the message names the problem and the fix


def require_backpack(model, what: str | None = None) -> None:
    if not getattr(model.config, "is_backpack", False):
        detail = f" ({what})" if what else ""
        raise SenseToolError(f"this checkpoint is a Transformer; sense tools need a Backpack{detail}")


def encode_text(tokenizer, text: str, max_len: int) -> list[int]:
    """Token ids of a non-empty text that fits the model's context."""
    if not text or not text.strip():
        raise SenseToolError("the text is empty: give a sentence of at least one word")
    ids = tokenizer.encode(text, allowed_special="all")
    if len(ids) > max_len:
        raise SenseToolError(f"the text is {len(ids)} tokens long; this model reads at most {max_len}: shorten it")
    return ids


def word_variants(tokenizer, word: str) -> list[list[int]]:
    """The token sequences a word can appear as: with and without one leading space."""
    if not word or not word.strip():
        raise SenseToolError("the word is empty: give a word such as 'nurse'")
    if word in tokenizer.special_tokens_set:  # "<|endoftext|>" never follows a space of its own
        return [[tokenizer.encode_single_token(word)]]
    bare = word.strip()
    forms = [word] + [f for f in (" " + bare, bare) if f != word]
    variants = []
    for form in forms:
        ids = tokenizer.encode(form, allowed_special="all")
        if ids and ids not in variants:
            variants.append(ids)
    return variants


def word_tokens(tokenizer, word: str) -> list[int]:
    """The tokens of a word as it appears inside running text: "nurse" is read as " nurse" (the
    paper's convention); a word that already starts with a space, or has no letters or digits
    (",", "."), is taken as given; so is a special token such as "<|endoftext|>"."""
    if not word or not word.strip():
        raise SenseToolError("the word is empty: give a word such as 'nurse'")
    if word in tokenizer.special_tokens_set:  # one token: no space token in front of it
        return [tokenizer.encode_single_token(word)]
    form = word if word.startswith(" ") or not any(c.isalnum() for c in word) else " " + word
    return tokenizer.encode(form, allowed_special="all")


def word_positions(tokenizer, ids: list[int], word: str) -> list[int]:
    """Every position of `ids` covered by an occurrence of `word` (any of its variants)."""
    hits = set()
    for variant in word_variants(tokenizer, word):
        n = len(variant)
        for start in range(len(ids) - n + 1):
            if ids[start:start + n] == variant:
                hits.update(range(start, start + n))
    if not hits:
        shown = " | ".join(repr(tokenizer.decode([t])) for t in ids)
        raise SenseToolError(f"the word {word!r} does not occur in the text (its tokens: {shown})")
    return sorted(hits)


def token_text(tokenizer, token_id: int) -> str:
    """A token as text; partial UTF-8 bytes are shown with replacement characters."""
    return tokenizer.decode_single_token_bytes(token_id).decode("utf-8", errors="replace")


@torch.no_grad()
def vocabulary_senses(model, token_ids: torch.Tensor) -> torch.Tensor:
    """C(x) for arbitrary token ids (N, k, d), in fp32, without dropout."""
    return model.sense_network(model.wte(token_ids.to(model.wte.weight.device))).float()
