"""The first-contact stages, one per process: python -m backpack_dist.bench.stages NAME --out DIR [--dry_run].

Each writes DIR/NAME.json again after every figure, so a stage killed at its time limit keeps what
it had measured. --dry_run runs every stage at tiny shapes on the CPU (the command's own check)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .. import atomic
from ..model import build_model, model_config
from ..model.flops import sense_sum_flops
from ..model.sense_sum import SENSE_SUM_IMPLEMENTATIONS, resolve_sense_sum, sense_sum
from . import environment, resume_check, sdpa_backends
from .device import free_device_memory, synchronize
from .measure import run_variant
from .variants import Variant

SMALL = ("transformer-small", "backpack-small")
TINY = {"d_model": 64, "n_layer": 2, "n_head": 2, "n_senses": 4, "seq_len": 32, "vocab_size": 1000}
MEMORY_TARGET_GIB = 40.0


class Figures:
    """A stage's JSON, rewritten atomically after every figure."""

    def __init__(self, path: Path, **header):
        self.path, self.data = path, {**header, "figures": []}
        self.save()

    def add(self, figure: dict) -> None:
        self.data["figures"].append(figure)
        self.save()
        print(json.dumps(figure, default=str), flush=True)

    def save(self) -> None:
        atomic.write_json(self.path, self.data, indent=2, default=str)


def setting(dry_run: bool) -> dict:
    """Shapes and device: the real ones on the GPU, tiny ones on the CPU for --dry_run."""
    if dry_run:
        return {"device": torch.device("cpu"), "overrides": TINY, "micro_batch": 2, "precision": "fp32",
                "steps": 2, "warmup": 1}
    return {"device": torch.device("cuda"), "overrides": {}, "micro_batch": 32, "precision": "bf16",
            "steps": 10, "warmup": 3}


def stage_environment(fig: Figures, s: dict) -> None:
    """Versions, the device and the measured matmul ceiling."""
    fig.add({"versions": environment.versions()})
    fig.add({"matmul_ceiling": environment.matmul_ceiling(s["device"], size=256 if s["overrides"] else None)})


def stage_logits(fig: Figures, s: dict) -> None:
    """fp32 logits of both Small models on the device against the CPU (TF32 off): max abs / rel error."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name in SMALL:
        torch.manual_seed(0)
        model = build_model(name, **s["overrides"]).eval()
        cfg = model.config
        ids = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            cpu = model(ids).float()
            dev = model.to(s["device"])(ids.to(s["device"])).float().cpu()
        err = (dev - cpu).abs().max().item()
        fig.add({"model": name, "max_abs_error": err, "max_rel_error": err / cpu.abs().max().item(),
                 "device": str(s["device"])})
        del model
        free_device_memory(s["device"])


def stage_engine(fig: Figures, s: dict) -> None:
    """Both Small models through the trainer's engine (ZeRO-2, bf16 weights), eager and compiled."""
    # A dry run stays eager: inductor's CPU compile alone would take minutes on a small machine.
    for compiled in (False,) if s["overrides"] else (False, True):
        for name in SMALL:
            variant = Variant(name, "auto" if name.startswith("backpack") else None, "auto", compiled, "engine")
            row = run_variant(variant, s["overrides"], s["micro_batch"], {}, steps=s["steps"], warmup=s["warmup"],
                              precision=s["precision"], tokens="zipf", loss_chunk_tokens=None, device=s["device"],
                              seed=0, max_micro_batch=s["micro_batch"])
            fig.add(row)


def _time_sense_sum(impl: str, q, k, v, device, repeats: int = 5) -> dict:
    for t in (q, k, v):
        t.grad = None
    sense_sum(q, k, v, impl=impl).sum().backward()  # warm-up (and compilation, for flex)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        sense_sum(q, k, v, impl=impl).sum().backward()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"fwd_bwd_s": (time.perf_counter() - start) / repeats, "peak_memory_gib": peak}


def _backends_accepting(impl: str, q, k, v) -> dict:
    """Which sdpa backends run this path alone (forward and backward): 'ok' or the error."""
    out = {}
    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        try:
            with sdpa_backends.only_sdpa_backend(backend):
                sense_sum(q, k, v, impl=impl).sum().backward()
            out[backend] = "ok"
        except Exception as e:  # noqa: BLE001 - a refusing backend raises RuntimeError or a Triton error
            out[backend] = f"{type(e).__name__}: {str(e).strip()[:160]}"
    return out


def _kernel_names(impl: str, q, k, v, device) -> list[str]:
    """The attention kernels the profiler saw: the backend this path really takes by default."""
    if device.type != "cuda":
        return []
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        sense_sum(q, k, v, impl=impl).sum().backward()
        synchronize(device)
    keys = ("flash", "fmha", "cudnn", "attention", "efficient", "softmax", "triton")
    return sorted({e.key for e in prof.key_averages() if any(w in e.key.lower() for w in keys)})[:20]


def stage_sense_sum(fig: Figures, s: dict) -> None:
    """Every sense-sum path at Backpack-Small's shapes: time, memory, the sdpa backends it takes."""
    cfg = model_config("backpack-small", **s["overrides"])
    device, n, T = s["device"], cfg.n_senses, cfg.seq_len
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    q, k = (torch.randn(s["micro_batch"], n, T, cfg.d_model // n, device=device, dtype=dtype, generator=g)
            .requires_grad_() for _ in range(2))
    v = torch.randn(s["micro_batch"], n, T, cfg.d_model, device=device, dtype=dtype, generator=g).requires_grad_()
    for impl in SENSE_SUM_IMPLEMENTATIONS:  # read here, so a new path appears without an edit
        row = {"sense_sum": impl, "resolved": resolve_sense_sum(impl, q), "error": None}
        flops = sense_sum_flops(row["resolved"], cfg, s["micro_batch"], T)  # the target: within 1.1x
        row["executed_over_defined_flops"] = flops["executed"] / flops["defined"]
        try:
            row["backends"] = _backends_accepting(impl, q, k, v)
            row["kernels"] = _kernel_names(impl, q, k, v, device)
            with sdpa_backends.forbid_math_sdpa():
                row.update(_time_sense_sum(impl, q, k, v, device))
        except Exception as e:  # noqa: BLE001 - one failing path must not hide the others
            row["error"] = f"{type(e).__name__}: {str(e).strip()[:300]}"
        fig.add(row)
        free_device_memory(device)


def stage_memory(fig: Figures, s: dict) -> None:
    """Peak memory of Backpack-Small at 32 x 512 through the trainer's engine, against the 40 GB target."""
    variant = Variant("backpack-small", "auto", "auto", False, "engine")
    row = run_variant(variant, s["overrides"], s["micro_batch"], {}, steps=2, warmup=1, precision=s["precision"],
                      tokens="zipf", loss_chunk_tokens=None, device=s["device"], seed=0,
                      max_micro_batch=s["micro_batch"])
    peak = row.get("peak_memory_gib")
    fig.add({**row, "target_gib": MEMORY_TARGET_GIB,
             "within_target": None if peak is None else peak * 2**30 / 1e9 <= MEMORY_TARGET_GIB})


def stage_resume(fig: Figures, s: dict) -> None:
    """30 ZeRO-2 steps of Backpack-Micro through the real trainer; killed after its step-15 save,
    resumed, and compared with an uninterrupted run."""
    resume_check.run(fig, fig.path.parent / "resume_work", tiny=bool(s["overrides"]))


STAGES = {"environment": stage_environment, "logits": stage_logits, "engine": stage_engine,
          "sense_sum": stage_sense_sum, "memory": stage_memory, "resume": stage_resume}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backpack_dist.bench.stages", description=__doc__)
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args(argv)
    s = setting(args.dry_run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = Figures(out / f"{args.stage}.json", stage=args.stage, dry_run=args.dry_run, device=str(s["device"]))
    STAGES[args.stage](fig, s)


if __name__ == "__main__":
    main()
