"""Tokenizers: tiktoken's GPT-2 encoding by default, or a local `.tiktoken` BPE file (for
clusters without internet, and for the demo's own small vocabulary).

tiktoken downloads GPT-2's files on first use; offline, point TIKTOKEN_CACHE_DIR at a cache
that holds them, or pass the path of an `r50k_base.tiktoken` file instead of "gpt2".
"""

from __future__ import annotations

import functools
import hashlib
import os

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's pre-tokenizer regex

GPT2 = "gpt2"
# A custom tokenizer travels with checkpoints, exports and transformers folders under this name.
TOKENIZER_FILE = "tokenizer.tiktoken"


@functools.lru_cache(maxsize=8)
def load_tokenizer(spec: str = GPT2) -> tiktoken.Encoding:
    """"gpt2" or the path of a .tiktoken file (GPT-2's pre-tokenizer, <|endoftext|> appended
    as the last id). Raises ValueError with the fix when neither works."""
    if spec == GPT2:
        try:
            return tiktoken.get_encoding(GPT2)
        except Exception as e:  # network failure surfaces as many exception types
            raise ValueError(
                f"cannot load tiktoken's gpt2 encoding ({type(e).__name__}); offline, set TIKTOKEN_CACHE_DIR "
                "to a filled cache or pass --tokenizer PATH/r50k_base.tiktoken"
            ) from None
    if not os.path.isfile(spec):
        raise ValueError(f"tokenizer {spec!r} is neither 'gpt2' nor an existing .tiktoken file")
    try:
        ranks = load_tiktoken_bpe(spec)
    except Exception as e:
        raise ValueError(f"tokenizer file {spec} is not a valid .tiktoken BPE file: {e}") from None
    return tiktoken.Encoding(
        name=os.path.basename(spec),
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": len(ranks)},
    )


@functools.lru_cache(maxsize=8)
def tokenizer_fingerprint(spec: str = GPT2) -> str:
    """A short hash of the tokenizer's vocabulary, recorded in manifests and checkpoints (cached like
    load_tokenizer: hashing 50k entries costs as much as tokenizing a megabyte)."""
    enc = load_tokenizer(spec)
    h = hashlib.sha256()
    for token, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
        h.update(rank.to_bytes(4, "little") + token)
    h.update(enc._pat_str.encode())
    return h.hexdigest()[:16]
