"""The tokenizer of an HF folder, and tokenizer files that transformers' AutoTokenizer reads.

The folders we read and write use GPT-2's tokenizer, or a `.tiktoken` file of our own kept
beside the HF files as tokenizer.tiktoken (transformers' own tokenizer.json is converted from it).
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path

from ..tokenizer import GPT2, TOKENIZER_FILE, load_tokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", TOKENIZER_FILE)
EOS = "<|endoftext|>"


def folder_tokenizer(folder: Path) -> str:
    """'gpt2' or the folder's tokenizer.tiktoken; ValueError when its own vocabulary is another."""
    if (folder / TOKENIZER_FILE).is_file():
        return str(folder / TOKENIZER_FILE)
    vocab = folder / "vocab.json"
    if vocab.is_file():
        try:
            size = len(json.loads(vocab.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {vocab}: {e}") from None
        if size != load_tokenizer(GPT2).n_vocab:
            raise ValueError(f"{vocab} has {size} tokens, not GPT-2's {load_tokenizer(GPT2).n_vocab}: only GPT-2's "
                             f"tokenizer (or a {TOKENIZER_FILE} beside the weights) is supported")
    return GPT2


def write_tokenizer(out: Path, spec: str, max_length: int) -> None:
    """tokenizer.json (+ tokenizer_config.json) for AutoTokenizer; a custom vocabulary also as
    tokenizer.tiktoken, which from-hf reads back exactly."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    enc = load_tokenizer(spec)
    with tempfile.TemporaryDirectory() as tmp:
        ranks_file = Path(tmp) / "ranks.tiktoken"  # the converter reads tiktoken's file format
        ranks_file.write_text("".join(f"{base64.b64encode(token).decode()} {rank}\n"
                                      for token, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])))
        converted = TikTokenConverter(vocab_file=str(ranks_file), pattern=enc._pat_str,
                                      additional_special_tokens=enc._special_tokens).converted()
    converted.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "GPT2TokenizerFast" if spec == GPT2 else "PreTrainedTokenizerFast",
              "bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "model_max_length": max_length,
              "add_prefix_space": False, "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if spec != GPT2:
        shutil.copyfile(spec, out / TOKENIZER_FILE)
