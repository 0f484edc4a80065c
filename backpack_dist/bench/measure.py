"""Timing training steps of one variant: autocast over fp32 weights (--optimizer torch/deepspeed) or the
trainer's own DeepSpeed engine (--optimizer engine, see engine_step.py)."""

from __future__ import annotations

import dataclasses
import time

import torch

from ..model import build_model
from ..model.flops import training_flops_per_token
from ..model.sense_sum import resolve_sense_sum
from ..train.metrics import device_peak_flops
from .device import free_device_memory, is_out_of_memory, synchronize
from .engine_step import measure_engine
from .variants import N_BATCHES, Variant, make_optimizer, token_batches


def measure(variant: Variant, overrides: dict, micro_batch: int, *, steps: int, warmup: int, precision: str,
            tokens: str, loss_chunk_tokens: int | None, device: torch.device, seed: int, profile: bool = False,
            grad_accum: int = 1, ds_config: str | None = None) -> dict:
    """Time `steps` training steps after `warmup` ones; raises on failure (out of memory included)."""
    if variant.optimizer == "engine":
        return measure_engine(variant, overrides, micro_batch, steps=steps, warmup=warmup, precision=precision,
                              tokens=tokens, loss_chunk_tokens=loss_chunk_tokens, device=device, seed=seed,
                              grad_accum=grad_accum, ds_config=ds_config)
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
