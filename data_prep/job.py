"""One prep job: plan the input, claim the output folder, and build this job's uncommitted
parts with W worker processes, showing progress."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from pathlib import Path

from tqdm import tqdm

from backpack_dist.tokenizer import GPT2, load_tokenizer, tokenizer_fingerprint

from .errors import PrepError
from .parts import FORMAT, build_part, claim_output, committed_manifest, part_name, settings_id
from .sources import expand_inputs, piece_to_json, plan_parts

DEFAULTS = dict(
    seq_len=512,
    tokenizer=GPT2,
    val_fraction=0.0005,
    seed=2357,
    text_field="text",
    one_doc_per_file=False,
    part_mb=64,
    max_doc_chars=1_000_000,
    # zstd level 1: tokens compress 1.32x (level 3: 1.40x) at twice the speed, which keeps shard
    # writing a small share of a job that tiktoken should dominate. "none" writes raw shards.
    compression="zstd:1",
)


def check_compression(name) -> str:
    from streaming.base.compression import get_compressions

    name = str(name)
    if name != "none" and name not in get_compressions():
        raise PrepError(f"--compression {name!r} is not one of streaming's codecs; use zstd, zstd:1 .. zstd:22, "
                        "gz, br, bz2, snappy or none")
    return name


def tokenizer_spec(tokenizer) -> str:
    spec = str(tokenizer)
    return spec if spec == GPT2 else os.path.abspath(spec)


def make_settings(files: list[str], *, seq_len, tokenizer, val_fraction, seed, text_field, one_doc_per_file,
                  part_mb, max_doc_chars, compression) -> dict:
    seq_len, seed, val_fraction = int(seq_len), int(seed), float(val_fraction)
    if seq_len < 1:
        raise PrepError(f"--seq_len must be >= 1, got {seq_len}")
    if not 0.0 <= val_fraction < 1.0:
        raise PrepError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    if float(part_mb) <= 0 or int(max_doc_chars) < 1:
        raise PrepError("--part_mb and --max_doc_chars must be positive")
    compression = check_compression(compression)
    spec = tokenizer_spec(tokenizer)
    enc = load_tokenizer(spec)
    part_bytes = int(float(part_mb) * (1 << 20))
    parts = plan_parts(files, one_doc_per_file=bool(one_doc_per_file), text_field=str(text_field),
                       part_bytes=part_bytes)
    inputs = []
    for f in files:
        st = os.stat(f)
        inputs.append({"path": f, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {
        "format": FORMAT,
        "tokenizer": spec,
        "tokenizer_fingerprint": tokenizer_fingerprint(spec),
        "vocab_size": enc.n_vocab,
        "eos_token_id": enc.eot_token,
        "seq_len": seq_len,
        "val_fraction": val_fraction,
        "seed": seed,
        "text_field": str(text_field),
        "one_doc_per_file": bool(one_doc_per_file),
        "max_doc_chars": int(max_doc_chars),
        "compression": compression,
        "part_bytes": part_bytes,
        "inputs": inputs,
        "parts": [[piece_to_json(p) for p in part] for part in parts],
    }


# ------------------------------------------------------------ worker processes

_progress_queue = None


def _init_worker(progress_queue) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _build_part_in_worker(out_dir: Path, settings: dict, index: int) -> dict:
    return build_part(out_dir, settings, index, lambda d, t: _progress_queue.put((d, t)))


class _Progress:
    """Three bars: parts (of this job), documents/s and tokens/s."""

    def __init__(self, total_parts: int, enabled: bool):
        kw = dict(disable=not enabled, dynamic_ncols=True, smoothing=0.1)
        self.parts = tqdm(total=total_parts, desc="parts", unit="part", position=0, **kw)
        self.docs = tqdm(desc="documents", unit="doc", unit_scale=True, position=1, **kw)
        self.tokens = tqdm(desc="tokens", unit="tok", unit_scale=True, position=2, **kw)

    def add(self, docs: int, tokens: int) -> None:
        self.docs.update(docs)
        self.tokens.update(tokens)

    def close(self) -> None:
        for bar in (self.tokens, self.docs, self.parts):
            bar.close()


def run_parts(out_dir: Path, settings: dict, todo: list[int], workers: int, progress: bool) -> list[dict]:
    if todo:
        import streaming  # noqa: F401  (slow to import: once here, before timing and before forking workers)
    bars = _Progress(len(todo), progress)
    manifests = []
    try:
        if workers <= 1 or len(todo) <= 1:
            for index in todo:
                manifests.append(build_part(out_dir, settings, index, bars.add))
                bars.parts.update(1)
            return manifests
        ctx = mp.get_context("fork")
        progress_queue = ctx.Queue()
        errors: list[BaseException] = []

        # The pool calls these in the parent as each part ends; the None wakes the loop below at
        # once (polling for results would leave the last part's commit unnoticed for a while).
        def part_done(manifest):
            manifests.append(manifest)
            progress_queue.put(None)

        def part_failed(error):
            errors.append(error)
            progress_queue.put(None)

        with ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(progress_queue,)) as pool:
            for i in todo:
                pool.apply_async(_build_part_in_worker, (out_dir, settings, i), callback=part_done,
                                 error_callback=part_failed)
            while len(manifests) < len(todo) and not errors:
                try:
                    item = progress_queue.get(timeout=1.0)
                except queue.Empty:
                    continue
                if item is not None:
                    bars.add(*item)
                bars.parts.n = len(manifests)
                bars.parts.refresh()
            if errors:
                raise errors[0]  # a worker's error; leaving the block terminates the others
            while True:  # the last counts
                try:
                    item = progress_queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    bars.add(*item)
        return sorted(manifests, key=lambda m: m["part"])
    finally:
        bars.close()


def run_job(inputs, out_dir, *, num_shards: int = 1, shard_index: int = 0, workers: int = 1, overwrite: bool = False,
            progress: bool = True, **options) -> dict:
    """Build the parts that belong to job shard_index of num_shards (part p belongs to job p % num_shards).
    Returns a summary: parts built/skipped and their counts."""
    num_shards, shard_index, workers = int(num_shards), int(shard_index), int(workers)
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise PrepError(f"--shard_index must be in [0, --num_shards), got {shard_index} of {num_shards}")
    if workers < 1:
        raise PrepError(f"--workers must be >= 1, got {workers}")
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise PrepError(f"unknown option(s): {', '.join(sorted(unknown))}")
    out_dir = Path(out_dir).absolute()
    settings = make_settings(expand_inputs(inputs), **{**DEFAULTS, **options})
    claim_output(out_dir, settings, bool(overwrite))
    sid = settings_id(settings)
    mine = [p for p in range(len(settings["parts"])) if p % num_shards == shard_index]
    todo = [p for p in mine if committed_manifest(out_dir, p, sid) is None]
    if todo:
        (out_dir / "dataset.json").unlink(missing_ok=True)  # the merged view is stale from now on
    if todo:
        import streaming  # noqa: F401  (slow to import: load it before the clock starts)
    started = time.time()
    manifests = run_parts(out_dir, settings, todo, workers, progress)
    seconds = time.time() - started
    docs = sum(m["splits"][s]["documents"] for m in manifests for s in m["splits"])
    tokens = sum(m["splits"][s]["tokens"] for m in manifests for s in m["splits"])
    summary = {
        "out_dir": str(out_dir),
        "parts_total": len(settings["parts"]),
        "parts_of_this_job": len(mine),
        "parts_built": [part_name(m["part"]) for m in manifests],
        "parts_already_committed": len(mine) - len(todo),
        "documents": docs,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds) if seconds > 0 and tokens else 0,
    }
    return summary
