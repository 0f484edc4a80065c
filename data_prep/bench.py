"""Throughput benchmark: end-to-end prep tokens/s against raw tiktoken encode_ordinary on the
same documents, in the same run, with 1 and more workers.

    python -m data_prep.bench [--mb 64] [--part_mb 8] [--workers 1,2] [--reps 3] [--source FILE.jsonl ...]

The corpus is real web text (the shared OpenWebText-like samples) repeated to about --mb MB in
one jsonl file. Ratio = (1-worker end-to-end tokens/s) / (raw encode_ordinary tokens/s); the
target is >= 0.8. Scaling = (W-worker tokens/s) / (1-worker tokens/s), printed next to the
scaling of raw encode_ordinary split over W processes, which is the most the machine allows.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from backpack_dist.tokenizer import load_tokenizer

from .job import run_job
from .options import JobOptions

SHARED = Path(os.environ.get("BACKPACK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DEFAULT_SOURCES = [
    SHARED / "data/openwebtext_sample/webtext_gpt2_train_subset.jsonl",
    SHARED / "data/openwebtext_sample/c4_en_train00000_first1000.jsonl",
]


def build_corpus(sources: list[Path], mb: float, path: Path) -> list[str]:
    lines = [line for src in sources for line in Path(src).read_text().splitlines() if line.strip()]
    texts = [json.loads(line)["text"] for line in lines]
    target, size, docs = mb * (1 << 20), 0, []
    with open(path, "w") as f:
        while size < target:
            for line, text in zip(lines, texts, strict=True):
                f.write(line + "\n")
                size += len(line) + 1
                docs.append(text)
    return docs


def _clocks() -> tuple[float, float]:
    """(wall, CPU seconds of this process and its finished children)."""
    self, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = self.ru_utime + self.ru_stime + children.ru_utime + children.ru_stime
    return time.perf_counter(), cpu


def raw_encode(docs: list[str]) -> tuple[int, float, float]:
    """(tokens incl. one EOS per document, wall s, CPU s) of plain encode_ordinary."""
    enc = load_tokenizer("gpt2")
    wall, cpu = _clocks()
    n = sum(len(enc.encode_ordinary(d)) for d in docs) + len(docs)
    wall2, cpu2 = _clocks()
    return n, wall2 - wall, cpu2 - cpu


_docs_for_workers: list[str] = []


def _encode_slice(worker_and_count: tuple[int, int]) -> int:
    worker, count = worker_and_count
    enc = load_tokenizer("gpt2")
    return sum(len(enc.encode_ordinary(d)) for d in _docs_for_workers[worker::count])


def raw_encode_parallel(docs: list[str], workers: int) -> tuple[int, float, float]:
    """Raw encode_ordinary split over `workers` forked processes: the scaling this machine allows
    at all (shared caches, memory bandwidth, busy neighbours), to judge the job's scaling against."""
    global _docs_for_workers
    _docs_for_workers = docs  # inherited by the forked workers, never pickled
    wall, cpu = _clocks()
    if workers == 1:
        n = _encode_slice((0, 1))
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            n = sum(pool.map(_encode_slice, [(w, workers) for w in range(workers)]))
    wall2, cpu2 = _clocks()
    _docs_for_workers = []
    return n + len(docs), wall2 - wall, cpu2 - cpu


def end_to_end(corpus: Path, out: Path, workers: int, part_mb: float, seq_len: int) -> tuple[int, float, float]:
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = _clocks()
    summary = run_job([corpus], JobOptions(out_dir=str(out), workers=workers, seq_len=seq_len, part_mb=part_mb,
                                           progress=False))
    wall2, cpu2 = _clocks()
    return summary["tokens"], wall2 - wall, cpu2 - cpu


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(mb: float = 64, workers="1,2", reps: int = 3, source=None, part_mb: float = 8, seq_len: int = 512) -> dict:
    """Each rep runs raw encode_ordinary, then one job per worker count (and raw encode_ordinary
    over as many processes), interleaved so that load from other users of the machine hits all of
    them alike; figures are medians over the reps."""
    if source:
        sources = [Path(s) for s in (source if isinstance(source, (list, tuple)) else [source])]
    else:
        sources = DEFAULT_SOURCES
    counts = workers if isinstance(workers, (list, tuple)) else str(workers).strip("()[]").split(",")
    worker_counts = [int(w) for w in counts]
    import streaming  # noqa: F401  (import once, outside the timings)

    tmp = Path(tempfile.mkdtemp(prefix="data_prep_bench_"))
    try:
        corpus = tmp / "corpus.jsonl"
        docs = build_corpus(sources, mb, corpus)
        runs: dict[object, list[tuple[int, float, float]]] = {"raw": []}
        for _ in range(int(reps)):
            runs["raw"].append(raw_encode(docs))
            for w in worker_counts:
                runs.setdefault(w, []).append(end_to_end(corpus, tmp / "out", w, part_mb, seq_len))
                if w != 1:
                    runs.setdefault(f"raw{w}", []).append(raw_encode_parallel(docs, w))

        def wall(key, rep):
            n, seconds, _ = runs[key][rep]
            return n / seconds

        def cpu(key, rep):
            n, _, seconds = runs[key][rep]
            return n / seconds

        def median_of(f) -> float:
            return statistics.median(f(rep) for rep in range(int(reps)))

        one = worker_counts[0]
        ratios = [wall(1, rep) / wall("raw", rep) for rep in range(int(reps))] if 1 in worker_counts else []
        result = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.node()}: {cpu_name()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}",
            "command": "python -m data_prep.bench " + " ".join(sys.argv[1:]),
            "corpus": f"{corpus.stat().st_size / (1 << 20):.1f} MB jsonl, {len(docs)} documents, "
            f"{runs['raw'][0][0]} tokens incl. EOS",
            # Medians over reps; ratios pair each job with the raw run of its own rep, so load that
            # comes and goes between reps cancels out.
            "raw_encode_ordinary_tokens_per_s": round(median_of(lambda r: wall("raw", r))),
            "end_to_end_tokens_per_s": {w: round(median_of(lambda r, w=w: wall(w, r))) for w in worker_counts},
            "ratio_1_worker_to_raw": round(statistics.median(ratios), 3) if ratios else None,
            "ratio_per_rep": [round(x, 3) for x in ratios],
            "scaling_vs_1_worker": {w: round(median_of(lambda r, w=w: wall(w, r) / wall(one, r)), 3)
                                    for w in worker_counts},
            # The same split of raw encode_ordinary over W processes: what the machine allows.
            "raw_scaling_vs_1_process": {w: round(median_of(lambda r, w=w: wall(f"raw{w}", r) / wall("raw", r)), 3)
                                         for w in worker_counts if w != 1},
            # Tokens per CPU-second: what a worker costs, independent of how much CPU it was given.
            "raw_tokens_per_cpu_s": round(median_of(lambda r: cpu("raw", r))),
            "end_to_end_tokens_per_cpu_s": {w: round(median_of(lambda r, w=w: cpu(w, r))) for w in worker_counts},
            "cpu_ratio_1_worker_to_raw": round(median_of(lambda r: cpu(1, r) / cpu("raw", r)), 3)
            if 1 in worker_counts else None,
        }
        print(json.dumps(result, indent=1))
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from backpack_dist import cli

    cli.run(main, name="data_prep.bench")
