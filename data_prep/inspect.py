"""Reading a merged output back: counts, samples, and the documents themselves (the
exactness tests use iter_document_tokens to rebuild every document from the samples)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import PrepError
from .job import check_tokenizer
from .merge import read_dataset_info
from .parts import SPLITS, count_committed, read_prep


def open_split(out_dir, split: str):
    """streaming.StreamingDataset over OUT/split, in index order (the training loader reads it the same way)."""
    from streaming import StreamingDataset

    return StreamingDataset(local=str(Path(out_dir) / split), shuffle=False, batch_size=1)


def iter_document_tokens(out_dir, split: str) -> Iterator[np.ndarray]:
    """Each document's token ids (without EOS), in order, rebuilt from the samples: within a
    part, every sample after the first starts with the previous sample's last token."""
    info = read_dataset_info(out_dir)
    eos = info["eos_token_id"]
    if info["splits"][split]["samples"] == 0:
        return
    dataset = open_split(out_dir, split)
    sample = 0
    for n_samples in info["splits"][split]["part_samples"]:
        pieces = []
        for k in range(n_samples):
            tokens = dataset[sample + k]["tokens"]
            pieces.append(tokens if k == 0 else tokens[1:])
        sample += n_samples
        if not pieces:
            continue
        stream = np.concatenate(pieces)
        ends = np.flatnonzero(stream == eos)
        start = 0
        for end in ends:
            yield stream[start:end]
            start = end + 1
        if start != len(stream):
            raise ValueError(f"{out_dir}/{split}: a part's token stream does not end with EOS")


def iter_documents(out_dir, split: str) -> Iterator[str]:
    enc = check_tokenizer(read_dataset_info(out_dir)["tokenizer"])
    for ids in iter_document_tokens(out_dir, split):
        yield enc.decode(ids.tolist())


def inspect(out_dir, samples: int = 2, chars: int = 300) -> str:
    """Counts per split and a few decoded samples; for an unmerged folder, how many parts are done."""
    out_dir = Path(out_dir)
    if samples < 0 or chars < 0:
        raise PrepError(f"--samples and --chars must be >= 0, got {samples} and {chars}")
    dataset_json = out_dir / "dataset.json"
    if not dataset_json.is_file():
        settings = read_prep(out_dir)["settings"]
        done = count_committed(out_dir, settings)  # only parts committed with the current settings
        return (f"{out_dir}: not merged yet; {done} of {len(settings['parts'])} parts are committed "
                f"(run `python -m data_prep merge --out_dir {out_dir}` when all jobs are done)")
    info = read_dataset_info(out_dir)
    enc = check_tokenizer(info["tokenizer"])
    lines = [f"{out_dir}: seq_len {info['seq_len']}, tokenizer {info['tokenizer']} "
             f"({info['tokenizer_fingerprint']}, vocab {info['vocab_size']}, eos {info['eos_token_id']}), "
             f"{info['num_parts']} parts"]
    for split in SPLITS:
        c = info["splits"][split]
        lines.append(f"  {split}: {c['documents']:,} documents, {c['tokens']:,} tokens, {c['samples']:,} samples")
    lines.append(f"  skipped: {json.dumps(info['skipped'])}  repaired: {json.dumps(info['repaired'])}")
    for split in SPLITS:
        n = min(samples, info["splits"][split]["samples"])
        if n == 0:
            continue
        dataset = open_split(out_dir, split)
        for i in range(n):
            tokens = dataset[i]["tokens"]
            text = enc.decode(tokens.tolist())
            shown = text[:chars] + ("..." if len(text) > chars else "")
            lines.append(f"--- {split} sample {i} ({len(tokens)} tokens) ---\n{shown}")
    return "\n".join(lines)
