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


def _read_dataset_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path} ({e}); rerun data_prep's merge to rewrite it") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path} is not data-prep's dataset.json (expected a JSON object); rerun data_prep's merge")
    return info


def read_mds_samples(directory, tokenizer_fingerprint: str | None, limit=None,
                     seq_len: int | None = None) -> tuple[list[list[int]], list[Path], int | None]:
    """(samples, files to hash, the data's seq_len or None when unknown). With `seq_len` (the
    model's context), data prepared for another context is refused: its samples would score
    shorter (or longer) contexts than the model's and the perplexity would not be comparable."""
    from streaming import LocalDataset

    directory = Path(directory)
    if (directory / "val" / "index.json").is_file():
        directory = directory / "val"
    if not (directory / "index.json").is_file():
        raise ValueError(f"{directory} is not data-prep output: expected an MDS folder OUT/val with index.json "
                         "(run data_prep, then pass --owt_val_dir OUT)")
    dataset_json = directory.parent / "dataset.json"
    info = _read_dataset_info(dataset_json) if dataset_json.is_file() else {}
    named = _fingerprints(info)
    if tokenizer_fingerprint and named and tokenizer_fingerprint not in named:
        raise ValueError(f"{dataset_json} was tokenized with tokenizer {sorted(named)} but the model uses "
                         f"{tokenizer_fingerprint}; prepare the validation data with the model's tokenizer")
    data_seq_len = info.get("seq_len") if isinstance(info.get("seq_len"), int) else None
    if seq_len is not None and data_seq_len is not None and data_seq_len != seq_len:
        raise ValueError(f"{dataset_json} was prepared with seq_len {data_seq_len} but the model's context is "
                         f"{seq_len}; prepare the validation data with --seq_len {seq_len}")
    samples = []
    with _uncompressed(directory) as readable:
        dataset = LocalDataset(local=str(readable))
        n = len(dataset) if limit is None else min(limit, len(dataset))
        for i in range(n):
            tokens = dataset[i].get("tokens")
            if not isinstance(tokens, np.ndarray) or tokens.ndim != 1:
                raise ValueError(f"{directory} sample {i} has no 1-d 'tokens' array (expected data-prep MDS output)")
            samples.append(tokens.astype(np.int64).tolist())
    if data_seq_len is None and len(samples) > 1:  # no dataset.json: every sample but the last is full
        data_seq_len = len(samples[0]) - 1
        if seq_len is not None and data_seq_len != seq_len:
            raise ValueError(f"the samples in {directory} were cut for seq_len {data_seq_len} but the model's "
                             f"context is {seq_len}; prepare the validation data with --seq_len {seq_len}")
    files = [directory / "index.json"] + ([dataset_json] if dataset_json.is_file() else [])
    return samples, files, data_seq_len


def chunk_documents(token_docs, seq_len: int, eot_token: int) -> list[list[int]]:
    """Documents, each followed by end-of-text, concatenated and cut into samples of seq_len+1
    tokens overlapping by one (data-prep's layout); the last sample may be shorter."""
    stream = [t for doc in token_docs for t in (*doc, eot_token)]
    return [stream[s:s + seq_len + 1] for s in range(0, max(len(stream) - 1, 0), seq_len)]


def load_owt(directory, enc, seq_len: int, tokenizer_fingerprint: str | None, limit=None, vocab_size=None):
    """(samples, data record); the record names the seq_len the samples were cut for. With
    vocab_size the samples are checked against the model now (see owt_requests)."""
    if directory is not None:
        samples, files, data_seq_len = read_mds_samples(directory, tokenizer_fingerprint, limit, seq_len)
        record = {**local_record(files, samples), "seq_len": data_seq_len}
    else:
        train = load_hub(*HUB, local_flag="--owt_val_dir OUT (data-prep output)")
        val = train.train_test_split(test_size=VAL_FRACTION, seed=SPLIT_SEED, shuffle=True)["test"]
        samples = take(chunk_documents((enc.encode_ordinary(t) for t in val["text"]), seq_len, enc.eot_token), limit)
        record = {**hub_record(HUB[0], f"test_size={VAL_FRACTION} seed={SPLIT_SEED}", "train", samples),
                  "seq_len": seq_len}
    if vocab_size is not None:
        owt_requests(samples, seq_len, vocab_size)
    return samples, record


def owt_requests(samples, seq_len: int, vocab_size: int) -> list[tuple[list[int], list[int]]]:
    """(first token, the rest) per sample; ValueError for samples the model cannot score."""
    requests = []
    for i, sample in enumerate(samples):
        if len(sample) - 1 > seq_len:
            raise ValueError(f"OWT sample {i} predicts {len(sample) - 1} tokens but the model's context is "
                             f"{seq_len}; prepare the validation data with --seq_len {seq_len}")
        if len(sample) < 2:
            continue
        if max(sample) >= vocab_size:
            raise ValueError(f"OWT sample {i} holds token id {max(sample)} >= the model's vocabulary {vocab_size}; "
                             "the data was tokenized with another tokenizer")
        requests.append((sample[:1], sample[1:]))
    if not requests:
        raise ValueError("no OWT samples to score")
    return requests


def evaluate_owt(scorer, samples) -> dict:
    requests = owt_requests(samples, scorer.seq_len, scorer.model.config.vocab_size)
    scores = scorer.loglikelihoods(requests, desc="owt")
    tokens = sum(len(c) for _, c in requests)
    return {"ppl": math.exp(-sum(ll for ll, _ in scores) / tokens), "examples": len(requests), "tokens": tokens}
