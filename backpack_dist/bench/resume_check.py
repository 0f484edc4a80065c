"""First contact's resume check: Backpack-Micro through the real trainer (`python -m
backpack_dist.train`, DeepSpeed ZeRO-2, a world of one) on generated MDS data, once uninterrupted and
once killed right after its step-15 save (a failpoint) and rerun; the two must agree exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..demo.corpus import generate
from ..demo.vocabulary import write_tiktoken_file
from ..train import failpoints

REPO = Path(__file__).resolve().parents[2]
STEPS, SAVE_AT = 30, 15
TINY = ["--d_model", "32", "--n_layer", "1", "--n_head", "2", "--n_senses", "2"]


def make_data(work: Path, seq_len: int) -> tuple[Path, int]:
    """A generated corpus, its own small BPE vocabulary, and MDS shards made by data_prep."""
    data = work / "data"
    if not (data / "dataset.json").is_file():
        documents = generate(200, seed=0)
        corpus, tokenizer = work / "docs.jsonl", work / "demo.tiktoken"
        corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
        write_tiktoken_file(documents, tokenizer)
        subprocess.run([sys.executable, "-m", "data_prep", "text", "--input", str(corpus), "--out_dir", str(data),
                        "--seq_len", str(seq_len), "--tokenizer", str(tokenizer), "--val_fraction", "0.05"],
                       check=True, cwd=REPO)
    return data, json.loads((data / "dataset.json").read_text())["vocab_size"]


def train_args(data: Path, run_dir: Path, vocab: int, seq_len: int, tiny: bool) -> list[str]:
    return [sys.executable, "-m", "backpack_dist.train", "--model", "backpack-micro", *(TINY if tiny else []),
            "--seq_len", str(seq_len), "--vocab_size", str(vocab), "--dropout", "0.1", "--data_dir", str(data),
            "--run_dir", str(run_dir), "--ds_config", str(REPO / "ds_configs" / "zero2.json"),
            "--global_batch", "8", "--micro_batch", "4" if tiny else "8", "--max_steps", str(STEPS), "--lr", "3e-3",
            "--warmup_steps", "2", "--log_every", "1", "--eval_every", "1000", "--save_every", str(SAVE_AT),
            "--wandb", "disabled", "--num_workers", "0"]


def train_lines(run_dir: Path) -> dict[int, dict]:
    keys = ("loss", "lr", "grad_norm", "tokens_seen")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {m["step"]: {k: m.get(k) for k in keys} for m in lines if "loss" in m}


def final_weights(run_dir: Path) -> dict:
    [path] = (run_dir / "checkpoints").glob(f"step_{STEPS:08d}/**/mp_rank_00_model_states.pt")
    return torch.load(path, map_location="cpu", weights_only=False)["module"]


def crash_after_save(args: list[str], work: Path) -> float:
    """Start the run, SIGKILL it once it has completed its step-SAVE_AT checkpoint; seconds taken."""
    paused = work / "paused"
    env = {**os.environ, failpoints.PAUSE: f"after_complete:{SAVE_AT}", failpoints.PAUSED: str(paused)}
    start = time.time()
    with open(work / "crashed.log", "w") as log:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while not paused.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the run exited ({proc.returncode}) before its step-{SAVE_AT} save: "
                                   "see crashed.log")
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.time() - start


def run(fig, work: Path, tiny: bool) -> None:
    work.mkdir(parents=True, exist_ok=True)
    seq_len = 32 if tiny else 256
    data, vocab = make_data(work, seq_len)
    fig.add({"data": str(data), "vocab_size": vocab, "seq_len": seq_len})
    timings = {}
    for name in ("uninterrupted", "resumed"):
        run_dir = work / name
        args = train_args(data, run_dir, vocab, seq_len, tiny)
        start = time.time()
        if name == "resumed":
            timings["crashed_s"] = crash_after_save(args, work)
        with open(work / f"{name}.log", "w") as log:
            subprocess.run(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
        timings[f"{name}_s"] = time.time() - start
        fig.add({"run": name, "seconds": timings[f"{name}_s"], "steps": sorted(train_lines(run_dir))[-1]})
    expected, got = train_lines(work / "uninterrupted"), train_lines(work / "resumed")
    a, b = final_weights(work / "uninterrupted"), final_weights(work / "resumed")
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    fig.add({"resumed_from": SAVE_AT, "steps": STEPS,
             "lines_equal": all(expected.get(i) == got.get(i) for i in range(1, STEPS + 1)),
             "weights_equal": not mismatched and a.keys() == b.keys(), "mismatched_weights": mismatched[:10],
             "final_loss": got.get(STEPS, {}).get("loss"), **timings})
