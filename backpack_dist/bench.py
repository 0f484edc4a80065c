"""python -m backpack_dist.bench: training-step throughput of the six models, side by side.

For each model and each chosen implementation (sense sum, loss, torch.compile, optimizer) it
times full training steps - forward, backward, gradient clipping, optimizer step - in bf16
autocast with fp32 master weights, at the largest power-of-two micro batch that fits (on a GPU)
or a given one, and reports tokens/s, MFU against the device's peak, peak memory and the
Backpack / Transformer throughput ratio per size. A table goes to stdout, everything to JSON.

    python -m backpack_dist.bench                                   # all six, default implementations
    python -m backpack_dist.bench --models backpack-small,transformer-small --sense_sum sdpa,chunked,flex \\
        --loss full,chunked --compile false,true --optimizer torch,deepspeed
    python -m backpack_dist.bench --models backpack-micro,transformer-micro --d_model 64 --n_layer 2 \\
        --seq_len 128 --micro_batch 2 --steps 3                     # CPU smoke run

Needs neither DeepSpeed (imported only for --optimizer deepspeed) nor mosaicml-streaming.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import itertools
import shlex
import sys
import time
import typing
from pathlib import Path

import torch

from . import atomic, cli
from .model import MODEL_NAMES, build_model
from .model.config import ModelOverrides
from .model.flops import training_flops_per_token
from .model.loss import LOSS_IMPLEMENTATIONS
from .model.sense_sum import SENSE_SUM_IMPLEMENTATIONS, resolve_sense_sum
from .train.metrics import device_peak_flops

OPTIMIZERS = ("torch", "deepspeed")
TOKEN_DISTRIBUTIONS = ("zipf", "uniform")
N_BATCHES = 4  # distinct batches cycled through, resident on the device


BenchError = cli.UsageError  # bad input, reported as one line before any work starts


@dataclasses.dataclass(frozen=True)
class Variant:
    model: str
    sense_sum: str | None  # None for Transformers
    loss: str
    compile: bool
    optimizer: str

    @property
    def family(self) -> str:
        return self.model.split("-")[0]

    @property
    def size(self) -> str:
        return self.model.split("-")[1]

    def label(self) -> str:
        parts = [self.model] + ([f"sense_sum={self.sense_sum}"] if self.sense_sum else [])
        parts += [f"loss={self.loss}", f"compile={self.compile}", f"optimizer={self.optimizer}"]
        return " ".join(parts)


def expand_variants(models, sense_sums, losses, compiles, optimizers) -> list[Variant]:
    out = []
    for model in models:
        senses = sense_sums if model.startswith("backpack") else [None]
        for sense, loss, comp, opt in itertools.product(senses, losses, compiles, optimizers):
            out.append(Variant(model, sense, loss, comp, opt))
    return out


def token_batches(vocab: int, batch: int, seq_len: int, distribution: str, device, seed: int):
    """(input, target) pairs of token ids. 'zipf' draws ids with frequency ~ 1/rank, like text, so
    that the share of distinct tokens (which sets the Backpack's sense-network work) is realistic."""
    g = torch.Generator().manual_seed(seed)
    shape = (N_BATCHES, batch, seq_len + 1)
    if distribution == "uniform":
        ids = torch.randint(0, vocab, shape, generator=g)
    else:
        weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
        ranks = torch.multinomial(weights, shape[0] * shape[1] * shape[2], replacement=True, generator=g)
        ids = torch.randperm(vocab, generator=g)[ranks].view(shape)
    ids = ids.to(device)
    distinct = sum(torch.unique(ids[i, :, :-1]).numel() for i in range(N_BATCHES)) / (N_BATCHES * batch * seq_len)
    return [(ids[i, :, :-1], ids[i, :, 1:]) for i in range(N_BATCHES)], distinct


def make_optimizer(name: str, model: torch.nn.Module, device: torch.device):
    from .train.engine import weight_decay_groups

    groups = weight_decay_groups(model, 0.1)
    if name == "deepspeed":
        if device.type != "cuda":
            raise RuntimeError("DeepSpeed's FusedAdam needs a CUDA GPU")
        try:
            from deepspeed.ops.adam import FusedAdam
        except ImportError as e:
            raise RuntimeError(f"DeepSpeed is not installed ({e})") from e
        return FusedAdam(groups, lr=6e-4, betas=(0.9, 0.999), eps=1e-8, adam_w_mode=True)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.999), eps=1e-8, fused=fused or None,
                             foreach=None if fused else True)


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(variant: Variant, overrides: dict, micro_batch: int, *, steps: int, warmup: int, precision: str,
            tokens: str, loss_chunk_tokens: int | None, device: torch.device, seed: int, profile: bool = False) -> dict:
    """Time `steps` training steps after `warmup` ones; raises on failure (out of memory included)."""
    torch.manual_seed(seed)
    with device:
        model = build_model(variant.model, **overrides)
    impl = {"loss": variant.loss, "loss_chunk_tokens": loss_chunk_tokens}
    if variant.sense_sum:
        impl["sense_sum"] = variant.sense_sum
    model.set_implementation(**impl).train()
    optimizer = make_optimizer(variant.optimizer, model, device)
    step_fn = torch.compile(model) if variant.compile else model
    cfg = model.config
    batches, distinct = token_batches(cfg.vocab_size, micro_batch, cfg.seq_len, tokens, device, seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def train_step(i):
        ids, targets = batches[i % N_BATCHES]
        with autocast:
            loss = step_fn(ids, targets=targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for i in range(warmup):
        train_step(i)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(steps):
        loss = train_step(warmup + i)
    synchronize(device)
    elapsed = time.perf_counter() - start
    final_loss = loss.item()
    if not torch.isfinite(torch.tensor(final_loss)):
        raise RuntimeError(f"non-finite loss {final_loss}")
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    tokens_per_s = steps * micro_batch * cfg.seq_len / elapsed
    flops = training_flops_per_token(cfg)
    peak_flops = device_peak_flops() if device.type == "cuda" else None
    resolved = None
    if variant.sense_sum:
        probe = torch.empty(1, 1, 1, cfg.d_model // cfg.n_senses, device=device,
                            dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        resolved = resolve_sense_sum(variant.sense_sum, probe)
    profile_table = profile_steps(train_step, device) if profile else None
    return {
        "profile": profile_table,
        "micro_batch": micro_batch, "seq_len": cfg.seq_len, "steps": steps, "step_time_s": elapsed / steps,
        "tokens_per_s": tokens_per_s, "flops_per_token": flops,
        "mfu": None if peak_flops is None else tokens_per_s * flops / peak_flops,
        # Work actually done: the sense network runs once per distinct token of a micro batch.
        "mfu_executed": None if peak_flops is None or not cfg.is_backpack
        else tokens_per_s * training_flops_per_token(cfg, sense_fraction=distinct) / peak_flops,
        "peak_memory_gib": peak, "distinct_token_fraction": distinct, "final_loss": final_loss,
        "sense_sum_resolved": resolved, "implementation": model.implementation(),
    }


def profile_steps(train_step, device: torch.device, steps: int = 3, rows: int = 20) -> str:
    """torch.profiler's table of the operators that took the most device time over a few steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            train_step(i)
        synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=rows)


def largest_micro_batch(variant: Variant, overrides: dict, limit: int, **kwargs) -> int:
    """The largest power of two up to `limit` for which two training steps fit in GPU memory."""
    device = kwargs["device"]
    fits, size = 0, 1
    while size <= limit:
        try:
            measure(variant, overrides, size, steps=1, warmup=1,
                    **{k: v for k, v in kwargs.items() if k not in ("steps", "warmup", "profile")})
        except Exception as e:  # noqa: BLE001 - out of memory surfaces as several exception types
            if not is_out_of_memory(e):
                raise
            break
        finally:
            free_device_memory(device)
        fits, size = size, size * 2
    if not fits:
        raise RuntimeError("out of memory even at micro batch 1")
    return fits


def run_variant(variant: Variant, overrides: dict, micro_batch: int | None, search_cache: dict, **kwargs) -> dict:
    row = {"model": variant.model, "family": variant.family, "size": variant.size, "sense_sum": variant.sense_sum,
           "loss": variant.loss, "compile": variant.compile, "optimizer": variant.optimizer, "error": None}
    device = kwargs["device"]
    try:
        if micro_batch is None:
            # Searched eagerly once per (model, sense_sum, loss); compiled and optimizer variants reuse it.
            key = (variant.model, variant.sense_sum, variant.loss)
            if key not in search_cache:
                eager = dataclasses.replace(variant, compile=False, optimizer="torch")
                search_cache[key] = largest_micro_batch(eager, overrides, kwargs.pop("max_micro_batch"), **kwargs)
            else:
                kwargs.pop("max_micro_batch")
            micro_batch = search_cache[key]
        else:
            kwargs.pop("max_micro_batch")
        row.update(measure(variant, overrides, micro_batch, **kwargs))
    except Exception as e:  # noqa: BLE001 - one failing variant (no flash kernel, OOM...) must not end the run
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    finally:
        free_device_memory(device)
    return row


def throughput_ratios(rows: list[dict]) -> list[dict]:
    """Backpack / Transformer tokens/s per size: each Backpack row against the Transformer row
    with the same loss, compile and optimizer settings, and best against best."""
    ok = [r for r in rows if r["error"] is None]
    out = []
    for size in dict.fromkeys(r["size"] for r in ok):
        backpacks = [r for r in ok if r["size"] == size and r["family"] == "backpack"]
        transformers = [r for r in ok if r["size"] == size and r["family"] == "transformer"]
        for b in backpacks:
            for t in transformers:
                if (b["loss"], b["compile"], b["optimizer"]) == (t["loss"], t["compile"], t["optimizer"]):
                    out.append({"size": size, "kind": "same settings", "backpack": describe(b),
                                "transformer": describe(t), "backpack_over_transformer":
                                b["tokens_per_s"] / t["tokens_per_s"]})
        if backpacks and transformers:
            b = max(backpacks, key=lambda r: r["tokens_per_s"])
            t = max(transformers, key=lambda r: r["tokens_per_s"])
            out.append({"size": size, "kind": "best vs best", "backpack": describe(b), "transformer": describe(t),
                        "backpack_over_transformer": b["tokens_per_s"] / t["tokens_per_s"]})
    return out


def describe(row: dict) -> str:
    parts = [f"sense_sum={row['sense_sum']}"] if row["sense_sum"] else []
    parts += [f"loss={row['loss']}", f"compile={row['compile']}", f"optimizer={row['optimizer']}",
              f"mb={row.get('micro_batch')}"]
    return " ".join(parts)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict) -> None:
    print(f"device: {report['device']}  peak bf16 FLOP/s: {_fmt(report['peak_flops'], '.3g')}  "
          f"precision: {report['precision']}  seq_len: {report['seq_len']}")
    header = ["model", "sense_sum", "loss", "compile", "optimizer", "micro_batch", "tokens/s", "MFU", "MFU exec",
              "peak GiB", "step s", "error"]
    lines = [header]
    for r in report["results"]:
        sense = r["sense_sum"] or "-"
        if r.get("sense_sum_resolved") and r["sense_sum_resolved"] != r["sense_sum"]:
            sense += f"->{r['sense_sum_resolved']}"
        lines.append([r["model"], sense, r["loss"], str(r["compile"]), r["optimizer"],
                      _fmt(r.get("micro_batch"), "d"), _fmt(r.get("tokens_per_s"), ",.0f"), _fmt(r.get("mfu"), ".1%"),
                      _fmt(r.get("mfu_executed"), ".1%"), _fmt(r.get("peak_memory_gib"), ".1f"),
                      _fmt(r.get("step_time_s"), ".4f"), r["error"] or ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in report["results"]:
        if r.get("profile"):
            print(f"\nprofile of {r['model']} {describe(r)}, 3 steps:\n{r['profile']}")
    if report["ratios"]:
        print("\nbackpack/transformer tokens/s per size:")
        for r in report["ratios"]:
            print(f"  {r['size']:<6} {r['backpack_over_transformer']:.3f}  ({r['kind']}: backpack {r['backpack']}; "
                  f"transformer {r['transformer']})")


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
    """torch (fused AdamW) or deepspeed (FusedAdam)."""
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
    """The JSON to write; default: runs/bench/bench-<UTC time>.json."""

    def __post_init__(self):
        _choices("models", self.models, MODEL_NAMES)
        _choices("sense_sum", self.sense_sum, SENSE_SUM_IMPLEMENTATIONS)
        _choices("loss", self.loss, LOSS_IMPLEMENTATIONS)
        _choices("optimizer", self.optimizer, OPTIMIZERS)
        if not self.compile:
            raise BenchError("--compile is empty")
        for name in ("steps", "seq_len", "max_micro_batch", "micro_batch"):
            cli.check_range(self, name, low=1)
        cli.check_range(self, "warmup", low=0)
        try:
            self.check_overrides()
        except ValueError as e:
            raise BenchError(str(e)) from None


def bench(o: BenchOptions):
    """Benchmark training steps; comma-separated lists compare implementations in one run."""
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
                                device=dev, seed=seed, max_micro_batch=max_micro_batch, profile=bool(profile)))
    report = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m backpack_dist.bench " + shlex.join(sys.argv[1:]),
        "torch": torch.__version__, "peak_flops": device_peak_flops() if dev.type == "cuda" else None,
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
