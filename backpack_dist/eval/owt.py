"""OpenWebText validation perplexity: exp(mean token cross-entropy) over non-overlapping chunks
of seq_len predicted tokens.

Local data is data-prep output: an MDS folder OUT/val whose samples (column `tokens`, uint16)
hold seq_len+1 tokens and overlap by one, so sample s predicts tokens 1..seq_len of itself
given token 0 and the ones before - exactly the non-overlapping chunks. OUT/dataset.json, when
present, must name the model's tokenizer. Without a folder, the paper's split is rebuilt from
the hub (a random 0.0005 of documents, seed 2357; downloads all of OpenWebText, ~40 GB)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .sources import hub_record, load_hub, local_record, take

HUB = ("Skylion007/openwebtext", None, "train")
VAL_FRACTION, SPLIT_SEED = 0.0005, 2357


def _fingerprints(info: dict) -> set[str]:
    """Tokenizer fingerprints named anywhere near the top of dataset.json."""
    found = set()
    for key, value in info.items():
        if key == "tokenizer_fingerprint" and isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            found |= _fingerprints(value)
    return found


@contextlib.contextmanager
def _uncompressed(directory: Path):
    """The MDS folder itself, or a temporary copy with its compressed shards decompressed
    (streaming's LocalDataset reads raw shards only; the data folder is left untouched)."""
    shards = json.loads((directory / "index.json").read_text())["shards"]
    if all((directory / s["raw_data"]["basename"]).is_file() for s in shards):
        yield directory
        return
    from streaming.base.compression import decompress

    with tempfile.TemporaryDirectory(prefix="owt-val-") as tmp:
        tmp = Path(tmp)
        shutil.copyfile(directory / "index.json", tmp / "index.json")
        for shard in shards:
            raw = tmp / shard["raw_data"]["basename"]
            raw.parent.mkdir(parents=True, exist_ok=True)
            if (directory / shard["raw_data"]["basename"]).is_file():
                shutil.copyfile(directory / shard["raw_data"]["basename"], raw)
            else:
                zipped = directory / shard["zip_data"]["basename"]
                raw.write_bytes(decompress(shard["compression"], zipped.read_bytes()))
        yield tmp


def read_mds_samples(directory, tokenizer_fingerprint: str | None, limit=None) -> tuple[list[list[int]], list[Path]]:
    from streaming import LocalDataset

    directory = Path(directory)
    if (directory / "val" / "index.json").is_file():
        directory = directory / "val"
    if not (directory / "index.json").is_file():
        raise ValueError(f"{directory} is not data-prep output: expected an MDS folder OUT/val with index.json "
                         "(run data_prep, then pass --owt_val_dir OUT)")
    dataset_json = directory.parent / "dataset.json"
    if dataset_json.is_file() and tokenizer_fingerprint:
        named = _fingerprints(json.loads(dataset_json.read_text()))
        if named and tokenizer_fingerprint not in named:
            raise ValueError(f"{dataset_json} was tokenized with tokenizer {sorted(named)} but the model uses "
                             f"{tokenizer_fingerprint}; prepare the validation data with the model's tokenizer")
    samples = []
    with _uncompressed(directory) as readable:
        dataset = LocalDataset(local=str(readable))
        n = len(dataset) if limit is None else min(limit, len(dataset))
        for i in range(n):
            tokens = dataset[i].get("tokens")
            if not isinstance(tokens, np.ndarray) or tokens.ndim != 1:
                raise ValueError(f"{directory} sample {i} has no 1-d 'tokens' array (expected data-prep MDS output)")
            samples.append(tokens.astype(np.int64).tolist())
    files = [directory / "index.json"] + ([dataset_json] if dataset_json.is_file() else [])
    return samples, files


def chunk_documents(token_docs, seq_len: int, eot_token: int) -> list[list[int]]:
    """Documents, each followed by end-of-text, concatenated and cut into samples of seq_len+1
    tokens overlapping by one (data-prep's layout); the last sample may be shorter."""
    stream = [t for doc in token_docs for t in (*doc, eot_token)]
    return [stream[s:s + seq_len + 1] for s in range(0, max(len(stream) - 1, 0), seq_len)]


def load_owt(directory, enc, seq_len: int, tokenizer_fingerprint: str | None, limit=None):
    if directory is not None:
        samples, files = read_mds_samples(directory, tokenizer_fingerprint, limit)
        return samples, local_record(files, samples)
    train = load_hub(*HUB, local_flag="--owt_val_dir OUT (data-prep output)")
    val = train.train_test_split(test_size=VAL_FRACTION, seed=SPLIT_SEED, shuffle=True)["test"]
    samples = take(chunk_documents((enc.encode_ordinary(t) for t in val["text"]), seq_len, enc.eot_token), limit)
    return samples, hub_record(HUB[0], f"test_size={VAL_FRACTION} seed={SPLIT_SEED}", "train", samples)


def evaluate_owt(scorer, samples) -> dict:
    vocab = scorer.model.config.vocab_size
    requests = []
    for i, sample in enumerate(samples):
        if len(sample) - 1 > scorer.seq_len:
            raise ValueError(f"OWT sample {i} predicts {len(sample) - 1} tokens but the model's context is "
                             f"{scorer.seq_len}; prepare the data with seq_len={scorer.seq_len}")
        if len(sample) < 2:
            continue
        if max(sample) >= vocab:
            raise ValueError(f"OWT sample {i} holds token id {max(sample)} >= the model's vocabulary {vocab}; "
                             "the data was tokenized with another tokenizer")
        requests.append((sample[:1], sample[1:]))
    if not requests:
        raise ValueError("no OWT samples to score")
    scores = scorer.loglikelihoods(requests, desc="owt")
    tokens = sum(len(c) for _, c in requests)
    return {"ppl": math.exp(-sum(ll for ll, _ in scores) / tokens), "examples": len(requests), "tokens": tokens}
