"""A tiktoken BPE file for the demo corpus: the 256 byte tokens plus every word of the corpus,
with and without its leading space, and their prefixes (so GPT-2's merge procedure can build
each word from bytes). Whole words become single tokens, which keeps the sense look-up readable."""

from __future__ import annotations

import base64
import re


def build_ranks(documents: list[str]) -> list[bytes]:
    pieces = set()
    for doc in documents:
        pieces.update(m.encode() for m in re.findall(r"\S+", doc))
        pieces.update((" " + m).encode() for m in re.findall(r"\S+", doc))
    tokens = {bytes([b]) for b in range(256)}
    for piece in pieces:
        for end in range(2, len(piece) + 1):
            tokens.add(piece[:end])
    # Shorter first: each prefix gets a lower rank than what is built from it.
    return sorted(tokens, key=lambda t: (len(t), t))


def write_tiktoken_file(documents: list[str], path) -> int:
    """Writes `path`; returns the vocabulary size including <|endoftext|>."""
    ranks = build_ranks(documents)
    with open(path, "w") as f:
        for rank, token in enumerate(ranks):
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")
    return len(ranks) + 1


