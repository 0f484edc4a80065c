"""make demo / python -m backpack_dist.demo: the whole pipeline on a small generated corpus.

corpus -> data prep (MDS shards) -> DeepSpeed training of a small Backpack and its Transformer
(2 processes) -> checkpoints -> export -> eval harness on held-out text -> a sense look-up and an
intervention whose claim the demo checks (demo/claim.py). Every stage is the real command a user
would run; rerunning reuses what exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .. import atomic
from .. import cli as checked_cli
from . import claim as demo_claim
from .corpus import generate
from .vocabulary import write_tiktoken_file

PY = sys.executable


class StageFailed(RuntimeError):
    pass


def stage(number: int, total: int, title: str) -> None:
    print(f"\n==> [{number}/{total}] {title}", flush=True)


def run(cmd: list[str], env: dict | None = None) -> None:
    shown = shlex.join(str(c) for c in cmd).replace(PY, "python")  # quoted: it can be pasted into a shell
    print(f"$ {shown}", flush=True)
    result = subprocess.run([str(c) for c in cmd], env=env)
    if result.returncode != 0:
        raise StageFailed(f"`{shown}` exited with {result.returncode}")


def launcher(nprocs: int) -> list[str]:
    """DeepSpeed's launcher; on CPU it runs `nprocs` processes that talk over gloo."""
    from ..train.engine import free_port

    deepspeed = str(Path(PY).parent / "deepspeed")
    return [deepspeed, "--num_gpus", str(nprocs), "--master_port", free_port(), "--module", "backpack_dist.train"]


def training_env(nprocs: int) -> dict:
    env = dict(os.environ)
    # Share the cores between the processes instead of oversubscribing them.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // nprocs)))
    return env


def finished(run_dir: Path, steps: int) -> bool:
    from ..checkpoint import checkpoints_dir, latest_complete_step

    return latest_complete_step(checkpoints_dir(run_dir)) == steps


def last_metrics(run_dir: Path) -> dict:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [m for m in lines if "loss" in m]
    val = [m for m in lines if "val_loss" in m]
    return {"loss": train[-1]["loss"] if train else None, "val_loss": val[-1]["val_loss"] if val else None,
            "step": train[-1]["step"] if train else None}


# 600 steps of 16 sequences: the same tokens as 300 of 32 and about the same time, but twice the updates.
# With 300 the Backpack's loss depended on when it left its early plateau (0.80 to 0.96 across
# library versions and thread counts); with 600 it ended at 0.77-0.82 on five seeds (Transformer 0.77).
def main(out: str = "demo_out", docs: int = 6000, steps: int = 600, d_model: int = 128, n_layer: int = 4,
         n_head: int = 4, n_senses: int = 8, seq_len: int = 128, global_batch: int = 16, micro_batch: int = 8,
         nprocs: int = 2, seed: int = 0):
    """Run the demo into OUT (default ./demo_out); SEED seeds the corpus and both trainings. Smaller
    settings make a faster smoke run."""
    import torch

    started = time.time()
    out = Path(out).resolve()
    total = 7
    if torch.cuda.is_available():
        nprocs = min(nprocs, torch.cuda.device_count())

    stage(1, total, f"generate the corpus ({docs} documents; bank, bat, pitch and spring each in two topics)")
    corpus_dir = out / "corpus"
    corpus, tokenizer = corpus_dir / "docs.jsonl", corpus_dir / "demo.tiktoken"
    if corpus.exists() and tokenizer.exists():
        print(f"reusing {corpus}")
    else:
        corpus_dir.mkdir(parents=True, exist_ok=True)
        documents = generate(docs, seed)
        tmp = corpus.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
        vocab = write_tiktoken_file(documents, tokenizer)
        tmp.replace(corpus)
        print(f"wrote {corpus} and a {vocab}-token BPE vocabulary {tokenizer}")

    stage(2, total, "data prep: tokenize into streaming MDS shards (train + 5% held-out val)")
    data = out / "data"
    # One job: it merges its own output (`merge` is for arrays of jobs).
    run([PY, "-m", "data_prep", "text", "--input", corpus, "--out_dir", data, "--seq_len", seq_len,
         "--tokenizer", tokenizer, "--val_fraction", 0.05])
    vocab_size = json.loads((data / "dataset.json").read_text())["vocab_size"]

    runs = {}
    for i, family in enumerate(("backpack", "transformer")):
        stage(3 + i, total, f"train a small {family} with DeepSpeed ZeRO-2 on {nprocs} processes")
        run_dir = out / "runs" / family
        runs[family] = run_dir
        if finished(run_dir, steps):
            print(f"reusing {run_dir} (finished {steps} steps)")
            continue
        run(launcher(nprocs) + [
            "--model", f"{family}-micro", "--d_model", d_model, "--n_layer", n_layer, "--n_head", n_head,
            "--n_senses", n_senses, "--seq_len", seq_len, "--vocab_size", vocab_size, "--dropout", 0.0,
            "--data_dir", data, "--run_dir", run_dir, "--ds_config", Path(__file__).parents[2] / "ds_configs" /
            "zero2.json", "--global_batch", global_batch, "--micro_batch", micro_batch, "--max_steps", steps,
            "--lr", 3e-3, "--warmup_steps", max(2, steps // 20), "--log_every", max(1, steps // 20),
            "--eval_every", max(1, steps // 4), "--save_every", max(1, steps // 2), "--wandb", "disabled",
            "--num_workers", 0, "--seed", seed], env=training_env(nprocs))

    stage(5, total, "export both checkpoints to safetensors and score them with the eval harness")
    exports, results = {}, {}
    for family, run_dir in runs.items():
        exports[family] = out / "export" / family
        run([PY, "-m", "backpack_dist.export", run_dir, "--out", exports[family]])
        results[family] = out / "results" / f"{family}.json"
        run([PY, "-m", "backpack_dist.eval", "--checkpoint", exports[family], "--tasks", "owt",
             "--owt_val_dir", data, "--out", results[family]])
    run([PY, "-m", "backpack_dist.eval", "table", *results.values()])

    stage(6, total, "sense look-up: what sets each sense of ' bat' apart (baseball bats, cave bats)")
    backpack = exports["backpack"]
    run([PY, "-m", "backpack_dist.senses", "lookup", "--checkpoint", backpack, "--word", " bat", "--top", 6,
         "--relative"])

    # The claim is checked on the same prompt and scale the shown command uses (demo/claim.py).
    claim = demo_claim.measure(backpack)
    stage(7, total, f"intervention: \"{claim.prompt}\" is a {claim.source} bat; zero every sense of "
                    f"' {claim.cue}' and the Backpack no longer knows which bat")
    run([PY, "-m", "backpack_dist.senses", "predict", "--checkpoint", backpack, "--text", claim.prompt,
         "--scale", demo_claim.SCALE, "--top", 8])
    print(f"check: {claim.verdict()}")
    atomic.write_json(out / "results" / "intervention.json", claim.to_dict(), indent=2)

    summary(out, runs, exports, results, claim, started)


def summary(out: Path, runs: dict, exports: dict, results: dict, claim, started: float) -> None:
    print("\n" + "=" * 72)
    print(f"demo finished in {time.time() - started:.0f} s\n")
    for family, run_dir in runs.items():
        m = last_metrics(run_dir)
        report = json.loads(results[family].read_text())
        ppl = report.get("tasks", report).get("owt", {}).get("ppl") if isinstance(report, dict) else None
        print(f"{family:12s} step {m['step']}: train loss {m['loss']:.3f}, val loss {m['val_loss']:.3f}"
              + (f", held-out perplexity {ppl:.2f}" if isinstance(ppl, float) else ""))
    print(f"\nthe demo's claim: {claim.verdict()}")
    print(f"\nruns and checkpoints: {out / 'runs'}/{{backpack,transformer}}/checkpoints")
    print(f"metrics:              {out / 'runs'}/*/metrics.jsonl")
    print(f"exported models:      {out / 'export'}")
    print(f"eval results:         {out / 'results'} (and the claim's figures, intervention.json)")
    print("\nnext:")
    print(f"  python -m backpack_dist.serve --checkpoint {exports['backpack']} --port 8000   # the sense page")
    print(f"  python -m backpack_dist.senses lookup --checkpoint {exports['backpack']} --word bank --relative")
    print("  make demo                      # again: reuses the corpus, data and finished runs")
    print(f"  python -m backpack_dist.train --run_dir {runs['backpack']} ...   # rerun a run's command (flags in "
          "its config.json) and it resumes from its newest checkpoint")
    print("  python -m data_prep openwebtext --out_dir OWT && sbatch slurm/train_small.sh   # the real thing")
    print("  (see README.md: Cluster)")


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    out: str = "demo_out"
    """The demo's folder: corpus, data, runs, exports, results (a rerun reuses what is there)."""
    docs: int = 6000
    """Documents in the generated corpus."""
    steps: int = 600
    """Training steps of each model."""
    d_model: int = 128
    """Model width."""
    n_layer: int = 4
    """Layers."""
    n_head: int = 4
    """Attention heads."""
    n_senses: int = 8
    """Senses per word of the Backpack."""
    seq_len: int = 128
    """Context length."""
    global_batch: int = 16
    """Sequences per step."""
    micro_batch: int = 8
    """Sequences per process per forward."""
    nprocs: int = 2
    """Training processes (GPUs when there are some)."""
    seed: int = 0
    """Seeds the corpus and both trainings."""

    def __post_init__(self):
        for name in ("docs", "steps", "d_model", "n_layer", "n_head", "n_senses", "seq_len", "global_batch",
                     "micro_batch", "nprocs"):
            checked_cli.check_range(self, name, low=1)


def cli(options: DemoOptions):
    """Run the demo into --out (default ./demo_out); smaller settings make a faster smoke run."""
    try:
        main(**dataclasses.asdict(options))
    except StageFailed as e:
        print(f"\ndemo failed: {e}; fix the error above and rerun (finished stages are reused)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    checked_cli.run(cli, name="python -m backpack_dist.demo")
