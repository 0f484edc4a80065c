"""What the web page asks of the model, apart from HTTP: validate a JSON request, run the model,
return JSON-ready data. Bad requests raise SenseToolError with a message the page shows."""

from __future__ import annotations

import math
import threading

import torch

from ..senses.intervention import next_token_probs, top_predictions
from ..senses.lookup import lookup_token
from ..senses.words import SenseToolError, encode_text, require_backpack, token_text, word_tokens

MAX_TOP = 50
MAX_WORD_TOKENS = 8


def _int_field(payload: dict, name: str, default: int, low: int, high: int) -> int:
    value = payload.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SenseToolError(f"'{name}' must be an integer from {low} to {high}, got {value!r}")
    return value


class SenseService:
    """One loaded Backpack shared by the server's threads; model calls are serialised by a lock."""

    def __init__(self, model, tokenizer, info: dict | None = None):
        require_backpack(model, "the sense page")
        self.model, self.tokenizer = model, tokenizer
        self.meta = {"model_name": (info or {}).get("model_name", model.config.family),
                     "n_senses": model.config.n_senses, "max_tokens": model.config.seq_len}
        self._lock = threading.Lock()
        self._lookups: dict[tuple[int, int, bool], list[dict]] = {}

    def info(self) -> dict:
        return dict(self.meta)

    def _scales(self, raw, ids: list[int]) -> torch.Tensor | None:
        """`token_scales`: {token id: [k factors]}, applied at every position holding that token."""
        if raw is None:
            return None
        k = self.model.config.n_senses
        if not isinstance(raw, dict):
            raise SenseToolError("'token_scales' must map token ids to lists of sense factors")
        vocab = self.model.config.vocab_size
        table = torch.ones(1, len(ids), k)
        for key, row in raw.items():
            try:
                token = int(key)
            except ValueError:
                token = None
            if token is None or str(token) != key:  # int() also takes " 1", "1_0" and other digits
                raise SenseToolError(f"'token_scales' key {key!r} is not a token id: write ids as plain decimals "
                                     "such as \"15849\"")
            if not 0 <= token < vocab:
                raise SenseToolError(f"'token_scales' names token id {token}, outside this model's vocabulary "
                                     f"0..{vocab - 1}")
            positions = [j for j, t in enumerate(ids) if t == token]
            if not positions:  # a scale that would silently do nothing
                raise SenseToolError(f"'token_scales' names token id {token} "
                                     f"({token_text(self.tokenizer, token)!r}), which is not in the text")
            ok = isinstance(row, list) and len(row) == k and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row)
            if not ok:
                raise SenseToolError(f"the scales of token {token} must be {k} finite numbers, got {row!r}")
            table[0, positions] = torch.tensor(row, dtype=torch.float32)
        return table

    def predict(self, payload: dict) -> dict:
        text = payload.get("text")
        if not isinstance(text, str):
            raise SenseToolError("'text' must be a string: type a sentence")
        top = _int_field(payload, "top", 10, 1, MAX_TOP)
        ids = encode_text(self.tokenizer, text, self.model.config.seq_len)
        raw = payload.get("token_scales")
        scales = self._scales(raw, ids)
        name = f"the 'token_scales' of token {', '.join(map(str, raw or {}))}"
        with self._lock:
            probs = next_token_probs(self.model, ids, scales, name)
        return {"tokens": [{"position": j, "id": t, "text": token_text(self.tokenizer, t)} for j, t in enumerate(ids)],
                "predictions": top_predictions(self.tokenizer, probs, top)}

    def senses(self, payload: dict) -> dict:
        """Look-up of one token (by id) or of a typed word's tokens; "relative": true ranks each sense by its
        difference from the token's mean sense (senses.lookup.sense_scores), as `lookup --relative` does."""
        top = _int_field(payload, "top", 8, 1, MAX_TOP)
        relative = payload.get("relative", False)
        if not isinstance(relative, bool):
            raise SenseToolError(f"'relative' must be true or false, got {relative!r}")
        if "word" in payload:
            word = payload["word"]
            if not isinstance(word, str) or not word.strip():
                raise SenseToolError("type a word to look up")
            ids = word_tokens(self.tokenizer, word)
            if len(ids) > MAX_WORD_TOKENS:
                raise SenseToolError(f"'{word[:40]}' is {len(ids)} tokens; look up at most {MAX_WORD_TOKENS} at once")
        elif "id" in payload:
            ids = [_int_field(payload, "id", None, 0, self.model.config.vocab_size - 1)]
        else:
            raise SenseToolError(f"give 'word' (a word to look up) or 'id' (a token id from 0 to "
                                 f"{self.model.config.vocab_size - 1})")
        entries = []
        for t in ids:
            key = (t, top, relative)
            if key not in self._lookups:
                with self._lock:
                    self._lookups[key] = lookup_token(self.model, self.tokenizer, t, top, relative)
            entries.append({"id": t, "token": token_text(self.tokenizer, t), "senses": self._lookups[key]})
        return {"entries": entries}
