"""Throughput benchmark: end-to-end prep tokens/s against raw tiktoken encode_ordinary on the
same documents, in the same run, with 1 and more workers, and the whole command's wall time.

    python -m data_prep.bench [--mb 64] [--part_mb 8] [--workers 1,2] [--reps 3] [--source FILE.jsonl ...]
                              [--command true]

The corpus is real web text (the shared OpenWebText-like samples) repeated to about --mb MB in
one jsonl file. Ratio = (1-worker end-to-end tokens/s) / (raw encode_ordinary tokens/s); the
target is >= 0.8. Scaling = (W-worker tokens/s) / (1-worker tokens/s), printed next to the
scaling of raw encode_ordinary split over W processes, which is the most the machine allows.

With --command (the default), each rep also runs the real command as a user does,
`python -m data_prep text CORPUS --out_dir OUT --workers 1` in a fresh process: the job's own
figure (the tokens_per_second its summary prints: the parts' build time) and the command's wall
time, each against raw encode_ordinary of the same rep; and a fresh probe process that times the
fixed cost piece by piece (the interpreter's start, our own imports, `import streaming`,
loading the tokenizer, the interpreter's exit), plus one `python -X importtime` run that splits `import
streaming` into torch, torchvision (streaming.vision), transformers (streaming.text), sklearn (under
transformers) and the rest.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backpack_dist.tokenizer import load_tokenizer

from .job import run_job
from .options import JobOptions

SHARED = Path(os.environ.get("BACKPACK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
# OpenAI's WebText (the distribution OpenWebText re-creates; see data/openwebtext_sample/SOURCE.txt:
# the OpenWebText sample there has no document boundaries) and C4.
WEBTEXT = SHARED / "data/openwebtext_sample/webtext_gpt2_train_subset.jsonl"
DEFAULT_SOURCES = [
    WEBTEXT,
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


def command_run(corpus: Path, out: Path, part_mb: float, seq_len: int) -> dict:
    """The real command, one worker, in a fresh process (progress bars on, as by default, into a
    pipe): its summary and its wall time."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "data_prep", "text", str(corpus), "--out_dir", str(out), "--workers", "1",
           "--part_mb", str(part_mb), "--seq_len", str(seq_len)]
    wall = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    summary = json.loads(done.stdout)
    return {"tokens": summary["tokens"], "job_tokens_per_s": summary["tokens_per_second"],
            "job_s": summary["seconds"], "wall_s": wall}


# The start-up of `python -m data_prep text` in the order the command pays it (run_job imports
# streaming before its clock starts; the tokenizer is loaded by the job's checks).
_PROBE = """
import json, time
t0 = time.perf_counter()
import data_prep.__main__
t1 = time.perf_counter()
import streaming
t2 = time.perf_counter()
from backpack_dist.tokenizer import load_tokenizer, tokenizer_fingerprint
load_tokenizer("gpt2"), tokenizer_fingerprint("gpt2")
t3 = time.perf_counter()
print(json.dumps({"our_imports": t1 - t0, "import_streaming": t2 - t1, "tokenizer_load": t3 - t2}))
import gc
gc.freeze()  # as data_prep's main() ends, so the exit measured is the command's
"""


def startup_probe() -> dict:
    """Seconds of each fixed piece, measured in fresh processes: the interpreter's start (`python
    -c pass`), our imports, `import streaming`, the tokenizer, and the interpreter's exit (what
    the probe's wall time holds beyond the rest: finalizing every module torch, transformers and
    sklearn loaded; the probe freezes the garbage collector first, as the command does)."""
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    start = time.perf_counter() - wall
    wall = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - wall
    pieces = json.loads(done.stdout)
    return {"interpreter_start": start, **pieces, "interpreter_exit": wall - start - sum(pieces.values())}


def import_breakdown(what: str = "data_prep.__main__; import streaming",
                     heavy=("torch", "torchvision", "transformers", "sklearn")) -> dict:
    """`python -X importtime -c "import WHAT"` split into the heavy packages (each without the
    others imported under it) and the rest, in seconds: one run, for the explanation."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {what}"], capture_output=True,
                          text=True, check=True)
    # The output is post-order (a module's line follows its children's) with the nesting as
    # indentation: rebuild the tree to tell what was imported under what.
    stack: list[tuple[int, str, int, list]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        depth = len(name) - len(name.lstrip())
        children = []
        while stack and stack[-1][0] > depth:
            children.append(stack.pop())
        stack.append((depth, name.strip(), int(cumulative), children))

    def inner_heavy(node) -> int:  # the cumulative time of heavy packages imported under node
        return sum(c[2] if c[1] in heavy else inner_heavy(c) for c in node[3])

    found = dict.fromkeys(heavy, 0)

    def walk(node):
        if node[1] in heavy:
            found[node[1]] += node[2] - inner_heavy(node)
        for c in node[3]:
            walk(c)

    for node in stack:
        walk(node)
    ours = sum(n[2] for n in stack if n[1] in ("data_prep", "data_prep.__main__"))
    streaming_total = sum(n[2] for n in stack) - ours - sum(n[2] for n in stack if n[1] in ("site", "encodings"))
    rest = streaming_total - sum(found.values())
    return {"total_import_streaming": round(streaming_total / 1e6, 3),
            **{k: round(v / 1e6, 3) for k, v in found.items()}, "rest_of_streaming": round(rest / 1e6, 3)}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(mb: float = 64, workers="1,2", reps: int = 3, source=None, part_mb: float = 8, seq_len: int = 512,
         command: bool = True) -> dict:
    """Each rep runs raw encode_ordinary, then one job per worker count (and raw encode_ordinary
    over as many processes), then (--command) the real 1-worker command and the start-up probe,
    interleaved so that load from other users of the machine hits all of them alike; figures are
    medians over the reps."""
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
        commands: list[dict] = []
        probes: list[dict] = []
        loads: list[float] = []
        for _ in range(int(reps)):
            runs["raw"].append(raw_encode(docs))
            for w in worker_counts:
                runs.setdefault(w, []).append(end_to_end(corpus, tmp / "out", w, part_mb, seq_len))
                if w != 1:
                    runs.setdefault(f"raw{w}", []).append(raw_encode_parallel(docs, w))
            if command:
                commands.append(command_run(corpus, tmp / "out", part_mb, seq_len))
                probes.append(startup_probe())
            loads.append(os.getloadavg()[0])

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
            "machine": f"{platform.node()}: {cpu_name()}, {os.cpu_count()} CPUs, load average (1 min) "
            f"{min(loads):.1f}-{max(loads):.1f} during the reps, Python {platform.python_version()}",
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
        if command:
            raw_s = [runs["raw"][rep][1] for rep in range(int(reps))]
            job_ratios = [c["job_tokens_per_s"] / wall("raw", rep) for rep, c in enumerate(commands)]
            wall_ratios = [raw_s[rep] / c["wall_s"] for rep, c in enumerate(commands)]
            pieces = {k: statistics.median(p[k] for p in probes) for k in probes[0]}
            command_wall = statistics.median(c["wall_s"] for c in commands)
            job_s = statistics.median(c["job_s"] for c in commands)
            result["whole_command"] = {
                "run": f"python -m data_prep text CORPUS --out_dir OUT --workers 1 --part_mb {part_mb:g} "
                f"--seq_len {seq_len} (fresh process, progress bars into a pipe)",
                # The figure the job prints (its parts' build time), against raw of the same rep.
                "job_tokens_per_s": round(statistics.median(c["job_tokens_per_s"] for c in commands)),
                "ratio_job_to_raw": round(statistics.median(job_ratios), 3),
                "ratio_job_to_raw_per_rep": [round(x, 3) for x in job_ratios],
                # The whole command against raw encode_ordinary of the same documents (same tokens).
                "raw_s": round(statistics.median(raw_s), 3),
                "wall_s": round(command_wall, 3),
                "ratio_raw_to_wall": round(statistics.median(wall_ratios), 3),
                "ratio_raw_to_wall_per_rep": [round(x, 3) for x in wall_ratios],
                # Where the wall time goes: the job's work, the fixed cost (each piece measured
                # in a fresh probe process, medians), and the rest (planning the input, claiming
                # the output, merging, printing).
                "job_s": round(job_s, 3),
                "fixed_cost_s": {k: round(v, 3) for k, v in pieces.items()},
                "rest_s": round(command_wall - job_s - sum(pieces.values()), 3),
                "import_streaming_breakdown_s": import_breakdown(),
            }
        print(json.dumps(result, indent=1))
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class PrepBenchOptions:
    mb: float = 64
    """Megabytes of documents in the benchmark corpus."""
    workers: tuple[int, ...] = (1, 2)
    """Worker counts to compare."""
    reps: int = 3
    """Repetitions (figures are medians)."""
    source: tuple[str, ...] = ()
    """jsonl/text files to take documents from; default: the shared OpenWebText/WebText samples."""
    part_mb: float = 8
    """Input megabytes per part."""
    seq_len: int = 512
    """Tokens per sample are seq_len + 1."""
    command: bool = True
    """Also time the real one-worker command and its start-up pieces."""


def run(o: PrepBenchOptions) -> None:
    """Data prep against raw tiktoken on the same documents (see main)."""
    main(o.mb, list(o.workers), o.reps, list(o.source) or None, o.part_mb, o.seq_len, o.command)


if __name__ == "__main__":
    from backpack_dist import cli

    cli.run(run, name="python -m data_prep.bench")
