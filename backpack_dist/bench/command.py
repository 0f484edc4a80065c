"""python -m backpack_dist.bench: training-step throughput of the six models, side by side.

For each model and each chosen implementation (sense sum, loss, torch.compile, optimizer) it
times full training steps - forward, backward, gradient clipping, optimizer step - in bf16
autocast with fp32 master weights (--optimizer torch/deepspeed) or through the trainer's own
DeepSpeed engine with bf16 weights (--optimizer engine: ZeRO-2, accumulation, clipping, as training),
at the largest power-of-two micro batch that fits (on a GPU)
or a given one, and reports tokens/s, MFU against the device's peak, peak memory and the
Backpack / Transformer throughput ratio per size. A table goes to stdout, everything to JSON.

    python -m backpack_dist.bench                                   # all six, default implementations
    python -m backpack_dist.bench --models backpack-small,transformer-small --sense_sum sdpa,chunked,flex \\
        --loss full,chunked --compile false,true --optimizer torch,deepspeed
    python -m backpack_dist.bench --models backpack-micro,transformer-micro --d_model 64 --n_layer 2 \\
        --seq_len 128 --micro_batch 2 --steps 3                     # CPU smoke run
    python -m backpack_dist.bench --models backpack-small --optimizer engine --micro_batch 32   # training's MFU
    python -m backpack_dist.bench --first_contact --out DIR         # everything a first GPU should tell us

The JSON records torch, CUDA, cuDNN, NCCL and DeepSpeed versions, the device and a measured matmul
ceiling (bf16 8192^3 on a GPU, fp32 512^3 on a CPU).

Needs neither DeepSpeed nor mosaicml-streaming, except --optimizer deepspeed/engine and --first_contact.
"""

from __future__ import annotations

import dataclasses
import datetime
import shlex
import sys
import typing
from pathlib import Path

import torch

from .. import atomic, cli
from ..model import MODEL_NAMES, build_model
from ..model.config import ModelOverrides
from ..model.loss import LOSS_IMPLEMENTATIONS
from ..model.sense_sum import SENSE_SUM_IMPLEMENTATIONS
from ..train.metrics import device_peak_flops
from .environment import matmul_ceiling, versions
from .measure import run_variant
from .report import print_report, throughput_ratios
from .variants import OPTIMIZERS, expand_variants

BenchError = cli.UsageError  # bad input, reported as one line before any work starts


def _choices(name: str, items, allowed) -> None:
    if not items:
        raise BenchError(f"--{name} is empty")
    for item in items:
        if item not in allowed:
            raise BenchError(f"unknown --{name} {item!r}: choose from {', '.join(map(str, allowed))}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchOptions(ModelOverrides):
    """Benchmark training steps; comma-separated lists compare implementations in one run."""

    models: tuple[str, ...] = MODEL_NAMES
    """A subset of the six models."""
    micro_batch: int | None = None
    """Sequences per step; default: the largest power of two <= --max_micro_batch that fits (GPU only)."""
    seq_len: int = 512
    """Context length."""
    steps: int = 10
    """Timed steps per row."""
    warmup: int = 3
    """Untimed steps first."""
    sense_sum: tuple[str, ...] = ("auto",)
    """Sense-sum implementations to compare (model/sense_sum.py)."""
    loss: tuple[str, ...] = ("auto",)
    """Loss implementations to compare: auto, full, chunked."""
    compile: tuple[bool, ...] = (False,)
    """torch.compile off, on, or both (false,true)."""
    optimizer: tuple[str, ...] = ("torch",)
    """torch (fused AdamW), deepspeed (FusedAdam), or engine (the trainer's DeepSpeed engine and train_step)."""
    grad_accum: int = 1
    """Micro batches per optimizer step (--optimizer engine)."""
    ds_config: str | None = None
    """DeepSpeed JSON for --optimizer engine; default: the trainer's (ds_configs/zero2.json)."""
    precision: typing.Literal["bf16", "fp32"] = "bf16"
    """bf16 (autocast, fp32 master weights) or fp32."""
    tokens: typing.Literal["zipf", "uniform"] = "zipf"
    """Token ids drawn from a Zipf or a uniform distribution."""
    loss_chunk_tokens: int | None = None
    """Tokens per chunk of the chunked loss."""
    max_micro_batch: int = 256
    """The largest micro batch the search tries."""
    device: str | None = None
    """cpu, cuda or cuda:N; default: the GPU when there is one."""
    seed: int = 0
    """Seeds the weights and the tokens."""
    profile: bool = False
    """Also print torch.profiler's top operators of 3 steps per row."""
    out: str | None = None
    """The JSON to write (with --first_contact: the folder); default: runs/bench/bench-<UTC time>.json."""
    first_contact: bool = False
    """Run the first-GPU-contact stages (bench/first_contact.py), each in its own process and time limit."""
    dry_run: bool = False
    """With --first_contact: every stage at tiny shapes on the CPU (a check of the command itself)."""

    def __post_init__(self):
        _choices("models", self.models, MODEL_NAMES)
        _choices("sense_sum", self.sense_sum, SENSE_SUM_IMPLEMENTATIONS)
        _choices("loss", self.loss, LOSS_IMPLEMENTATIONS)
        _choices("optimizer", self.optimizer, OPTIMIZERS)
        if not self.compile:
            raise BenchError("--compile is empty")
        if self.first_contact and not self.out:
            raise BenchError("--first_contact writes a folder of figures: give --out DIR")
        if self.dry_run and not self.first_contact:
            raise BenchError("--dry_run belongs to --first_contact: add --first_contact")
        for name in ("steps", "seq_len", "max_micro_batch", "micro_batch", "grad_accum"):
            cli.check_range(self, name, low=1)
        cli.check_range(self, "warmup", low=0)
        try:
            self.check_overrides()
        except ValueError as e:
            raise BenchError(str(e)) from None


def bench(o: BenchOptions):
    """Benchmark training steps; comma-separated lists compare implementations in one run."""
    if o.first_contact:
        from .first_contact import first_contact

        sys.exit(first_contact(Path(o.out), dry_run=o.dry_run))
    names = list(o.models)
    variants = expand_variants(names, list(o.sense_sum), list(o.loss), list(o.compile), list(o.optimizer))
    micro_batch, seq_len, steps, warmup, device = o.micro_batch, o.seq_len, o.steps, o.warmup, o.device
    precision, tokens, loss_chunk_tokens = o.precision, o.tokens, o.loss_chunk_tokens
    max_micro_batch, seed, profile, out = o.max_micro_batch, o.seed, o.profile, o.out
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if micro_batch is None and dev.type != "cuda":
        raise BenchError("without a GPU there is no memory limit to search: give --micro_batch")
    overrides = o.model_overrides
    try:  # a bad override combination is bad input too: check before any work
        for name in names:
            with torch.device("meta"):
                build_model(name, **overrides)
    except ValueError as e:
        raise BenchError(str(e)) from e
    out_path = Path(out) if out else Path("runs/bench") / (
        "bench-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")

    rows, search_cache = [], {}
    for variant in variants:
        print(f"... {variant.label()}", file=sys.stderr, flush=True)
        rows.append(run_variant(variant, overrides, micro_batch, search_cache, steps=steps, warmup=warmup,
                                precision=precision, tokens=tokens, loss_chunk_tokens=loss_chunk_tokens,
                                device=dev, seed=seed, max_micro_batch=max_micro_batch, profile=bool(profile),
                                grad_accum=o.grad_accum, ds_config=o.ds_config))
    report = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m backpack_dist.bench " + shlex.join(sys.argv[1:]),
        "torch": torch.__version__, "versions": versions(), "matmul_ceiling": matmul_ceiling(dev),
        "peak_flops": device_peak_flops() if dev.type == "cuda" else None,
        "precision": precision, "seq_len": seq_len, "tokens": tokens, "overrides": overrides,
        "results": rows, "ratios": throughput_ratios(rows),
    }
    print_report(report)
    atomic.write_json(out_path, report, indent=2)
    print(f"\nwrote {out_path}")
    if not any(r["error"] is None for r in rows):
        sys.exit(1)


def main(argv=None) -> None:
    cli.run(bench, argv, name="python -m backpack_dist.bench")


if __name__ == "__main__":
    main()
