"""Sense probes: a small, cheap view of how a model's senses form while it trains.

At each validation the trainer records, for a few probe words, the top words of each sense
(E^T C(x)_l, as `senses lookup`) and the paper's gender probe: p(" she") and p(" he") after
"When the nurse came into the room,". `python -m backpack_dist.senses history RUN --word W`
reads them back from RUN/metrics.jsonl."""

from __future__ import annotations

import torch

from .intervention import next_token_probs
from .lookup import lookup_token
from .words import encode_text, word_tokens

DEFAULT_WORDS = (" science", " nurse", " bank")
PROMPT = "When the nurse came into the room,"
PRONOUNS = (" she", " he")
TOP_WORDS = 5


@torch.no_grad()
def measure(model, tokenizer, words=DEFAULT_WORDS, top: int = TOP_WORDS) -> dict:
    """{"senses": {word: [[top words of sense 0], ...]}, "pronouns": {" she": p, " he": p}} for a
    Backpack; a Transformer has no senses and gets the pronouns only. A word that is several
    tokens is probed by its first; words or pronouns the vocabulary splits are left out."""
    was_training = model.training
    model.eval()
    try:
        result = {}
        if model.config.is_backpack:
            result["senses"] = {}
            for word in words:
                token = word_tokens(tokenizer, word)[0]
                result["senses"][word] = [[item["token"] for item in sense["top"]]
                                          for sense in lookup_token(model, tokenizer, token, top)]
        ids = encode_text(tokenizer, PROMPT, model.config.seq_len)
        probs = next_token_probs(model, ids)
        result["pronouns"] = {p: float(probs[t[0]]) for p in PRONOUNS
                              if len(t := tokenizer.encode(p)) == 1 and t[0] < probs.numel()}
        return result
    finally:
        model.train(was_training)


def history(records: list[dict], word: str) -> list[tuple[int, list[list[str]]]]:
    """(step, top words per sense) of `word` at every probe in metrics records, in step order."""
    return sorted((r["step"], r["probes"]["senses"][word]) for r in records
                  if word in r.get("probes", {}).get("senses", {}))
