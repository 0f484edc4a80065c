"""Data-path benchmark: the tokens/s ONE loader worker delivers from MDS shards, next to what one
H200 consumes training Transformer-Micro at 50% MFU (issue 16, item 7; goal: 10x).

    python -m backpack_dist.data_bench [--mb 96] [--micro_batch 16,64,256] [--window_mtok 8] [--reps 5]
                                       [--source FILE.jsonl ...] [--data_dir PREP_OUT] [--out FILE.json]

The path is the trainer's own: `backpack_dist.data.TokenStream` (micro_batches.MicroBatchDataset,
mosaicml-streaming's StreamingDataset over OUT/train read a micro batch at a time, shuffled, 8
canonical nodes, in a torch DataLoader with num_workers=1), over a data-prep output built here from the shared WebText
documents (data_prep.bench's corpus) unless --data_dir names one. Each rep times one window of
--window_mtok million tokens per micro batch, interleaved, so load from other users of the
machine hits every micro batch alike; figures are medians over the reps.

  * tokens/s: B x seq_len input positions per batch over the window's wall clock;
  * tokens per worker CPU-second: the same tokens over the loader worker's CPU time (from
    /proc): what one worker delivers with a whole core, whatever share of the machine it got;
  * the trainer's side: the main process's CPU time per million tokens (receiving the batches);
  * need: 0.5 x peak bf16 FLOP/s of an H200 (train/metrics.py) / training FLOPs per token of
    Transformer-Micro (model/flops.py), the tokens/s one H200 consumes at 50% MFU;
  * first batch: seconds from a fresh iterator (worker start) to its first batch; every epoch
    starts with one (a window that crosses an epoch boundary is discarded and redone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODEL = "transformer-micro"
DEVICE = "H200"
MFU = 0.5


def consumption(model: str = MODEL, device: str = DEVICE, mfu: float = MFU) -> dict:
    """What one device consumes: mfu x its peak bf16 FLOP/s / the model's training FLOPs per token."""
    from .model.config import model_config
    from .model.flops import training_flops_per_token
    from .train.metrics import PEAK_BF16_FLOPS

    peak = dict(PEAK_BF16_FLOPS)[device]
    cfg = model_config(model)
    flops = training_flops_per_token(cfg)
    return {"model": model, "device": device, "mfu": mfu, "peak_bf16_flops": peak, "seq_len": cfg.seq_len,
            "training_flops_per_token": flops, "tokens_per_s": mfu * peak / flops}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_pid(stream) -> int | None:
    workers = getattr(stream._iterator, "_workers", None)  # torch's multi-process loader iterator
    return workers[0].pid if workers and len(workers) == 1 else None


def prepare(sources: list[Path], mb: float, tmp: Path) -> Path:
    """A data-prep output (one worker, default settings) over the corpus data_prep.bench builds."""
    from data_prep import prepare_text
    from data_prep.bench import build_corpus

    corpus = tmp / "corpus.jsonl"
    build_corpus(sources, mb, corpus)
    out = tmp / "prep"
    prepare_text([corpus], out, workers=1)
    corpus.unlink()
    return out


def corpus_of(mb: float, sources: list[Path]) -> str:
    return f"{mb:g} MB of " + ", ".join(s.name for s in sources)


def time_window(stream, tokens: int) -> dict | None:
    """Take batches until `tokens` input positions arrived; None when the window crossed an epoch
    boundary (the worker is restarted there, which a real epoch of billions of tokens amortizes)."""
    epoch, pid = stream.epoch, _worker_pid(stream)
    if pid is None:
        return None
    worker_cpu, main_cpu, wall = _cpu_seconds(pid), time.process_time(), time.perf_counter()
    n = 0
    while n < tokens:
        inputs, _ = next(stream)
        n += inputs.numel()
    wall, main_cpu = time.perf_counter() - wall, time.process_time() - main_cpu
    if stream.epoch != epoch or _worker_pid(stream) != pid:
        return None
    worker_cpu = _cpu_seconds(pid) - worker_cpu
    return {"tokens": n, "wall_s": wall, "worker_cpu_s": worker_cpu, "main_cpu_s": main_cpu}


@contextlib.contextmanager
def registering():
    """The node's streaming-registration lock that training takes (data.one_job_registers_at_a_time,
    without its barriers: one process here): a dataset created while a training job on this
    machine registers its own could take the same shared-memory prefix."""
    from .streaming_memory import node_lock, registered_here

    with node_lock(), registered_here():
        yield


def measure(train: Path, sizes: list[int], seq_len: int, window: int, reps: int, loads: list[float],
            streams: dict) -> tuple[dict, dict, dict]:
    """One TokenStream (one loader worker) per micro batch, then `reps` rounds of one window each, interleaved so that
    load from other users hits every micro batch alike: (windows, first-batch seconds, windows
    discarded at epoch ends), each by micro batch. The streams are left in `streams` to close."""
    from .data import TokenStream

    first_batch = {}
    for b in sizes:
        with registering():
            streams[b] = TokenStream(str(train), remote=None, micro_batch=b, seq_len=seq_len, shuffle=True, seed=0,
                                     num_canonical_nodes=8, num_workers=1, world_size=1)
        t = time.perf_counter()
        next(streams[b])
        first_batch[b] = time.perf_counter() - t
    windows: dict[int, list[dict]] = {b: [] for b in sizes}
    discarded = dict.fromkeys(sizes, 0)
    for b in sizes:  # warm-up: one untimed window each (page cache, the worker's prefetch)
        time_window(streams[b], window // 4)
    for _ in range(int(reps)):
        for b in sizes:
            while (w := time_window(streams[b], window)) is None:
                discarded[b] += 1
                if discarded[b] > 3 * int(reps):
                    raise RuntimeError(f"micro batch {b}: every window crossed an epoch; prepare more data (--mb)")
            windows[b].append(w)
        loads.append(os.getloadavg()[0])
    return windows, first_batch, discarded


def main(mb: float = 96, micro_batch="16,64,256", window_mtok: float = 8, reps: int = 5, source=None,
         data_dir: str | None = None, out: str | None = None) -> dict:
    from data_prep import read_dataset_info
    from data_prep.bench import WEBTEXT, cpu_name

    from . import atomic

    sizes = micro_batch if isinstance(micro_batch, (list, tuple)) else str(micro_batch).strip("()[]").split(",")
    sizes = [int(b) for b in sizes]
    sources = [Path(s) for s in (source if isinstance(source, (list, tuple)) else [source])] if source else [WEBTEXT]
    need = consumption()
    tmp = Path(tempfile.mkdtemp(prefix="data_bench_"))
    streams = {}
    try:
        started = time.perf_counter()
        prep = Path(data_dir) if data_dir else prepare(sources, mb, tmp)
        prep_s = time.perf_counter() - started
        info = read_dataset_info(prep)
        seq_len = info["seq_len"]
        if seq_len != need["seq_len"]:
            print(f"warning: the data's seq_len {seq_len} is not {MODEL}'s {need['seq_len']}", file=sys.stderr)
        window = int(window_mtok * 1e6)
        loads: list[float] = []
        windows, first_batch, discarded = measure(prep / "train", sizes, seq_len, window, reps, loads, streams)

        def med(b, f):
            return statistics.median(f(w) for w in windows[b])

        per_batch = {}
        for b in sizes:
            tps = med(b, lambda w: w["tokens"] / w["wall_s"])
            cpu_tps = med(b, lambda w: w["tokens"] / max(w["worker_cpu_s"], 1e-9))
            per_batch[b] = {
                "tokens_per_s": round(tps),
                "tokens_per_s_per_rep": [round(w["tokens"] / w["wall_s"]) for w in windows[b]],
                "ratio_to_need": round(tps / need["tokens_per_s"], 2),
                "tokens_per_worker_cpu_s": round(cpu_tps),
                "cpu_ratio_to_need": round(cpu_tps / need["tokens_per_s"], 2),
                "main_process_cpu_s_per_mtok": round(med(b, lambda w: w["main_cpu_s"] / w["tokens"] * 1e6), 3),
                "first_batch_s": round(first_batch[b], 3),
                "windows_discarded_at_epoch_ends": discarded[b],
            }
        splits = info.get("splits", {})
        result = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()}: {cpu_name()}, {os.cpu_count()} CPUs, load average (1 min) "
            f"{min(loads):.1f}-{max(loads):.1f} during the reps, Python {platform.python_version()}",
            "command": "python -m backpack_dist.data_bench " + " ".join(sys.argv[1:]),
            "data": f"{prep} ({'given' if data_dir else 'built from ' + corpus_of(mb, sources)} in {prep_s:.1f} s): "
            f"train {splits.get('train', {}).get('samples', '?')} samples of "
            f"{seq_len}+1 tokens",
            "loader": "TokenStream: MicroBatchDataset(shuffle, 8 canonical nodes) + DataLoader(num_workers=1)",
            "window_tokens": window,
            "reps": int(reps),
            "need": {k: (round(v) if k == "tokens_per_s" else v) for k, v in need.items()},
            "micro_batch": per_batch,
        }
        print(json.dumps(result, indent=1))
        print(" | ".join(f"micro batch {b}: {r['tokens_per_s'] / 1e6:.2f}M tok/s = {r['ratio_to_need']}x "
                         f"(per worker CPU-s {r['cpu_ratio_to_need']}x)" for b, r in per_batch.items())
              + f" of {need['tokens_per_s'] / 1e6:.2f}M tok/s needed (goal 10x)", file=sys.stderr)
        if out:
            atomic.write_json(out, result, indent=1)
        return result
    finally:
        for s in streams.values():
            s.close()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class DataBenchOptions:
    mb: float = 96
    """Megabytes of documents prepared for the benchmark (22M tokens: an epoch holds a few windows)."""
    micro_batch: tuple[int, ...] = (16, 64, 256)
    """Micro batch sizes to compare."""
    window_mtok: float = 8
    """Million tokens per timed window (long enough for the worker's CPU time, counted in 10 ms ticks)."""
    reps: int = 5
    """Timed windows per micro batch (figures are medians)."""
    source: tuple[str, ...] = ()
    """jsonl/text files to prepare; default: the shared WebText sample."""
    data_dir: str | None = None
    """An existing data-prep output to read instead of preparing one."""
    out: str | None = None
    """A JSON file for the figures."""


def run(o: DataBenchOptions) -> None:
    """Tokens/s one loader worker delivers from MDS shards, beside what one H200 consumes (see main)."""
    main(o.mb, list(o.micro_batch), o.window_mtok, o.reps, list(o.source) or None, o.data_dir, o.out)


if __name__ == "__main__":
    from . import cli

    cli.run(run, name="python -m backpack_dist.data_bench")
