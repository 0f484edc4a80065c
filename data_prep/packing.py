"""Tokenizing documents, choosing the validation documents, and cutting the token stream
into overlapping samples."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from backpack_dist.tokenizer import load_tokenizer

from .errors import PrepError

UINT16_LIMIT = 1 << 16


class DocumentTokenizer:
    """tiktoken's encode_ordinary (special-token text such as "<|endoftext|>" is encoded as
    plain text) followed by the EOS id, as uint16."""

    def __init__(self, spec: str, max_doc_chars: int):
        self.encoding = load_tokenizer(spec)
        self.eos = self.encoding.eot_token
        if self.encoding.n_vocab > UINT16_LIMIT:
            raise PrepError(f"tokenizer {spec} has {self.encoding.n_vocab} ids; uint16 tokens hold at most 65536")
        self.max_doc_chars = max_doc_chars

    def _encode(self, text: str) -> np.ndarray:
        # Same ids as encode_ordinary (disallowed_special=() turns off the special-token check and
        # nothing is allowed), but returned as an array, without building a Python list.
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def __call__(self, text: str) -> tuple[np.ndarray, bool]:
        """(ids + [EOS] as uint16, whether the document was long and tokenized in slices)."""
        if len(text) <= self.max_doc_chars:
            pieces = [self._encode(text)]
        else:
            pieces = [self._encode(s) for s in split_long_text(text, self.max_doc_chars)]
        n = sum(len(p) for p in pieces)
        out = np.empty(n + 1, dtype=np.uint16)
        at = 0
        for p in pieces:
            out[at : at + len(p)] = p
            at += len(p)
        out[n] = self.eos
        return out, len(pieces) > 1


def split_long_text(text: str, max_chars: int) -> list[str]:
    """Consecutive slices of at most max_chars, cut after whitespace where there is some in the
    second half of the window; they join back to text exactly. Bounds tokenizer memory and time
    on one enormous document while keeping it one document."""
    slices, start = [], 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = max(text.rfind(" ", start + max_chars // 2, end), text.rfind("\n", start + max_chars // 2, end))
        end = cut + 1 if cut >= 0 else end
        slices.append(text[start:end])
        start = end
    slices.append(text[start:])
    return slices


def is_validation(text: str | bytes, seed: int, val_fraction: float) -> bool:
    """A document's split depends only on its text (or its UTF-8 bytes) and the seed, not on
    files, order or the number of jobs; equal documents always land in the same split."""
    if val_fraction <= 0:
        return False
    data = text.encode("utf-8") if isinstance(text, str) else text
    digest = hashlib.blake2b(data, digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little") < val_fraction * 2.0**64


class SamplePacker:
    """Concatenates documents into one stream and emits samples of seq_len + 1 tokens that
    overlap by one token: sample i is stream[i*seq_len : i*seq_len + seq_len + 1], so every
    token after the first is a target exactly once. finish() emits the remainder (>= 2 tokens)."""

    def __init__(self, seq_len: int, write: Callable[[np.ndarray], None]):
        self.seq_len = seq_len
        self.write = write
        self.pending: list[np.ndarray] = []
        self.pending_len = 0
        self.flush_at = 64 * (seq_len + 1)
        self.documents = 0
        self.tokens = 0
        self.samples = 0

    def add(self, ids: np.ndarray) -> None:
        self.pending.append(ids)
        self.pending_len += len(ids)
        self.documents += 1
        self.tokens += len(ids)
        if self.pending_len >= self.flush_at:
            self._emit_full_samples()

    def _emit_full_samples(self) -> np.ndarray:
        stream = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        n_full = (len(stream) - 1) // self.seq_len
        for i in range(n_full):
            self.write(stream[i * self.seq_len : (i + 1) * self.seq_len + 1])
        self.samples += n_full
        rest = stream[n_full * self.seq_len :]  # starts with the overlap token
        self.pending, self.pending_len = [rest], len(rest)
        return rest

    def finish(self) -> None:
        if not self.pending:
            return
        rest = self._emit_full_samples()
        if len(rest) >= 2:
            self.write(rest)
            self.samples += 1
        # A single leftover token is the last token of the previous sample, already a target.
        self.pending, self.pending_len = [], 0
