"""One prep job: plan the input, claim the output folder, and build this job's uncommitted
parts with W worker processes, showing progress."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from backpack_dist.tokenizer import load_tokenizer, tokenizer_fingerprint

from .errors import PrepError
from .merge import check_skipped, merge
from .options import JobOptions, PrepSettings
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


def check_compression(name: str) -> str:
    from streaming.base.compression import get_compressions

    if name != "none" and name not in get_compressions():
        raise PrepError(f"--compression {name!r} is not one of streaming's codecs; use zstd, zstd:1 .. zstd:22, "
                        "gz, br, bz2, snappy or none")
    return name


def check_tokenizer(spec: str):
    """load_tokenizer's ValueError (a missing or invalid file, gpt2 offline without a cache) as a PrepError."""
    try:
        return load_tokenizer(spec)
    except ValueError as e:
        message = str(e).strip().splitlines()[0]
        hint = "" if "pass --tokenizer" in message else "; pass --tokenizer gpt2 or the path of a .tiktoken file"
        raise PrepError(message + hint) from None


def make_settings(files: list[str], opts: PrepSettings) -> dict:
    """The settings and the plan of a job (the same in every job of an array: they depend only on
    the inputs and options); refuses input that yields no document before anything is written."""
    spec = opts.tokenizer_spec
    enc = check_tokenizer(spec)
    part_bytes = int(opts.part_mb * (1 << 20))
    parts = plan_parts(files, one_doc_per_file=opts.one_doc_per_file, text_field=opts.text_field,
                       part_bytes=part_bytes)
    check_has_documents(parts, opts.text_field)
    compression = check_compression(opts.compression)  # last: input errors should not wait for its import
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
        "seq_len": opts.seq_len,
        "val_fraction": opts.val_fraction,
        "seed": opts.seed,
        "text_field": opts.text_field,
        "one_doc_per_file": opts.one_doc_per_file,
        "max_doc_chars": opts.max_doc_chars,
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
    # The job's SIGTERM handler unwinds with SystemExit; a worker doing that while it holds the
    # pool's result-queue lock can hang the pool's terminate(). Workers just die: the job removes
    # their half-built parts.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


def check_job(job: JobOptions) -> Path:
    """What a job checks without reading its input: the output folder and the tokenizer (loaded);
    the absolute output folder."""
    out_dir = Path(job.out_dir).absolute()
    check_out_dir(out_dir)
    check_tokenizer(job.tokenizer_spec)
    return out_dir


def run_job(inputs, job: JobOptions) -> dict:
    """Build the parts that belong to job shard_index of num_shards (part p belongs to job p % num_shards);
    a lone job (num_shards=1) then merges. Returns a summary: parts built/skipped, their counts, and
    `merged` (the dataset.json path, or None for a job of an array, which `merge` joins afterwards)."""
    out_dir = check_job(job)  # cheap: planning reads the input
    num_shards, shard_index = job.num_shards, job.shard_index
    settings = make_settings(expand_inputs(inputs), job)
    claim_output(out_dir, settings, job.overwrite)
    keys, sid = part_keys(settings), settings_id(settings)
    mine = [p for p in range(len(settings["parts"])) if p % num_shards == shard_index]
    todo = [p for p in mine if committed_manifest(out_dir, p, keys[p], sid) is None]
    if todo:
        (out_dir / "dataset.json").unlink(missing_ok=True)  # the merged view is stale from now on
    if todo:
        import streaming  # noqa: F401  (slow to import: load it before the clock starts)
    started = time.time()
    manifests = run_parts(out_dir, settings, todo, job.workers, job.progress)
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
            merge(out_dir, job.max_skipped)
        summary["merged"] = str(out_dir / "dataset.json")
    else:
        summary["merged"] = None
        # The share of unusable records is judged by `merge`, over all parts; this says what these parts skipped.
        note = check_skipped(summary["skipped"], docs, max_skipped=1.0, scope=" in the parts built now")
        if note:
            print(note, file=sys.stderr)
        summary["next"] = f"once all {num_shards} jobs have finished: python -m data_prep merge --out_dir {out_dir}"
    return summary
