"""One prep job: plan the input, claim the output folder, and build this job's uncommitted
parts with W worker processes, showing progress."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from backpack_dist.tokenizer import GPT2, load_tokenizer, tokenizer_fingerprint

from .errors import PrepError, as_bool, as_float, as_int
from .merge import merge
from .parts import (
    FORMAT,
    REPAIR_KEYS,
    SKIP_KEYS,
    build_part,
    check_out_dir,
    claim_output,
    committed_manifest,
    part_keys,
    part_name,
    settings_id,
)
from .sources import check_has_documents, expand_inputs, piece_to_json, plan_parts

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


def check_options(*, seq_len, tokenizer, val_fraction, seed, text_field, one_doc_per_file, part_mb, max_doc_chars,
                  compression) -> dict:
    """The options' types and ranges, checked before any file or the network is touched
    (--compression is checked by check_compression: it imports streaming, which takes seconds)."""
    val_fraction, part_mb = as_float("val_fraction", val_fraction), as_float("part_mb", part_mb)
    if not 0.0 <= val_fraction < 1.0:
        raise PrepError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    if part_mb <= 0:
        raise PrepError(f"--part_mb must be positive, got {part_mb}")
    return dict(
        seq_len=as_int("seq_len", seq_len, 1),
        tokenizer=tokenizer_spec(tokenizer),
        val_fraction=val_fraction,
        seed=as_int("seed", seed, 0, 2**63 - 1),  # the 8-byte key of the validation hash
        text_field=str(text_field),
        one_doc_per_file=as_bool("one_doc_per_file", one_doc_per_file),
        part_mb=part_mb,
        max_doc_chars=as_int("max_doc_chars", max_doc_chars, 1),
        compression=str(compression),
    )


def check_tokenizer(spec: str):
    """load_tokenizer's ValueError (a missing or invalid file, gpt2 offline without a cache) as a PrepError."""
    try:
        return load_tokenizer(spec)
    except ValueError as e:
        message = str(e).strip().splitlines()[0]
        hint = "" if "pass --tokenizer" in message else "; pass --tokenizer gpt2 or the path of a .tiktoken file"
        raise PrepError(message + hint) from None


def make_settings(files: list[str], **options) -> dict:
    """The settings and the plan of a job (the same in every job of an array: they depend only on
    the inputs and options); refuses input that yields no document before anything is written."""
    opts = check_options(**options)
    spec = opts["tokenizer"]
    enc = check_tokenizer(spec)
    part_bytes = int(opts["part_mb"] * (1 << 20))
    parts = plan_parts(files, one_doc_per_file=opts["one_doc_per_file"], text_field=opts["text_field"],
                       part_bytes=part_bytes)
    check_has_documents(parts, opts["text_field"])
    compression = check_compression(opts["compression"])  # last: input errors should not wait for its import
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
        "seq_len": opts["seq_len"],
        "val_fraction": opts["val_fraction"],
        "seed": opts["seed"],
        "text_field": opts["text_field"],
        "one_doc_per_file": opts["one_doc_per_file"],
        "max_doc_chars": opts["max_doc_chars"],
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
    try:
        return _run_parts(out_dir, settings, todo, workers, progress)
    except BaseException:
        # An error, SIGTERM or Ctrl-C: the workers are gone (leaving the pool terminated them), so
        # remove this job's half-built parts; committed parts stay and a rerun does the rest.
        for index in todo:
            shutil.rmtree(out_dir / ".tmp" / part_name(index), ignore_errors=True)
        raise


def _run_parts(out_dir: Path, settings: dict, todo: list[int], workers: int, progress: bool) -> list[dict]:
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


def check_job_options(out_dir, *, num_shards=1, shard_index=0, workers=1, overwrite=False, progress=True,
                      **options) -> dict:
    """Every option of a job but --compression checked without reading its input (the tokenizer
    is loaded): the job's own options normalized, with out_dir as an absolute Path."""
    num_shards = as_int("num_shards", num_shards, 1)
    shard_index = as_int("shard_index", shard_index, 0)
    if shard_index >= num_shards:
        raise PrepError(f"--shard_index must be in [0, --num_shards), got {shard_index} of {num_shards}")
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise PrepError(f"unknown option(s): {', '.join(sorted(unknown))}")
    out_dir = Path(str(out_dir)).absolute()
    check_out_dir(out_dir)
    check_tokenizer(check_options(**{**DEFAULTS, **options})["tokenizer"])
    return dict(out_dir=out_dir, num_shards=num_shards, shard_index=shard_index, workers=as_int("workers", workers, 1),
                overwrite=as_bool("overwrite", overwrite), progress=as_bool("progress", progress))


def run_job(inputs, out_dir, *, num_shards: int = 1, shard_index: int = 0, workers: int = 1, overwrite: bool = False,
            progress: bool = True, **options) -> dict:
    """Build the parts that belong to job shard_index of num_shards (part p belongs to job p % num_shards);
    a lone job (num_shards=1) then merges. Returns a summary: parts built/skipped, their counts, and
    `merged` (the dataset.json path, or None for a job of an array, which `merge` joins afterwards)."""
    job = check_job_options(out_dir, num_shards=num_shards, shard_index=shard_index, workers=workers,
                            overwrite=overwrite, progress=progress, **options)  # cheap: planning reads the input
    out_dir, num_shards, shard_index = job["out_dir"], job["num_shards"], job["shard_index"]
    settings = make_settings(expand_inputs(inputs), **{**DEFAULTS, **options})
    claim_output(out_dir, settings, job["overwrite"])
    keys, sid = part_keys(settings), settings_id(settings)
    mine = [p for p in range(len(settings["parts"])) if p % num_shards == shard_index]
    todo = [p for p in mine if committed_manifest(out_dir, p, keys[p], sid) is None]
    if todo:
        (out_dir / "dataset.json").unlink(missing_ok=True)  # the merged view is stale from now on
    if todo:
        import streaming  # noqa: F401  (slow to import: load it before the clock starts)
    started = time.time()
    manifests = run_parts(out_dir, settings, todo, job["workers"], job["progress"])
    seconds = time.time() - started

    def total(group, key):
        return sum(m[group][key] for m in manifests)

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
        "skipped": {k: total("skipped", k) for k in SKIP_KEYS},  # in the parts built now
        "repaired": {k: total("repaired", k) for k in REPAIR_KEYS},
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds) if seconds > 0 and tokens else 0,
    }
    if num_shards == 1:
        # A lone job holds every part, so it merges them itself and its output is ready to train
        # on. A job of an array cannot know when the others end: `merge` runs after all of them.
        if not (out_dir / "dataset.json").is_file():  # a rerun with nothing to do keeps the merge
            merge(out_dir)
        summary["merged"] = str(out_dir / "dataset.json")
    else:
        summary["merged"] = None
        summary["next"] = f"once all {num_shards} jobs have finished: python -m data_prep merge --out_dir {out_dir}"
    return summary
