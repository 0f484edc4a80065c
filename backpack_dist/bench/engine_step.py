"""Timing the trainer's own step (--optimizer engine): the DeepSpeed engine built by
train.engine.build_engine from a ZeRO JSON (ZeRO-2 by default), with the trainer's accumulation,
clipping, bf16 weights and train.loop.train_step, in a world of one. The MFU it reports is the MFU
training gets, unlike autocast over fp32 weights."""

from __future__ import annotations

import itertools
import time

import torch

from ..model import build_model
from ..model.flops import training_flops_per_token
from ..train.metrics import device_peak_flops
from .device import synchronize
from .variants import Variant, token_batches


def trainer_config(variant: Variant, overrides: dict, micro_batch: int, *, grad_accum: int, precision: str,
                   ds_config: str | None, max_steps: int):
    from ..train.config import DEFAULT_DS_CONFIG, TrainConfig

    return TrainConfig(model=variant.model, micro_batch=micro_batch, global_batch=micro_batch * grad_accum,
                       precision=precision, compile=variant.compile, loss_impl=variant.loss,
                       sense_sum=variant.sense_sum or "auto", ds_config=ds_config or DEFAULT_DS_CONFIG,
                       max_steps=max_steps, **overrides)


def measure_engine(variant: Variant, overrides: dict, micro_batch: int, *, steps: int, warmup: int, precision: str,
                   tokens: str, loss_chunk_tokens: int | None, device: torch.device, seed: int,
                   grad_accum: int = 1, ds_config: str | None = None, profile: bool = False) -> dict:
    """Time `steps` optimizer steps (each of `grad_accum` micro batches) after `warmup` ones."""
    from ..train.config import load_ds_config
    from ..train.engine import build_engine, init_distributed
    from ..train.loop import train_step

    if device.type == "cuda" and device.index not in (None, 0):
        raise RuntimeError("--optimizer engine runs in a world of one on the first GPU (cuda or cuda:0)")
    cfg = trainer_config(variant, overrides, micro_batch, grad_accum=grad_accum, precision=precision,
                         ds_config=ds_config, max_steps=warmup + steps + 10)
    if not torch.distributed.is_initialized():
        init_distributed()
    torch.manual_seed(seed)
    model = build_model(variant.model, **overrides)
    impl = {"loss": variant.loss, "loss_chunk_tokens": loss_chunk_tokens}
    if variant.sense_sum:
        impl["sense_sum"] = variant.sense_sum
    model.set_implementation(**impl).train()
    engine, _, _ = build_engine(model, cfg, load_ds_config(cfg.ds_config), 1)
    if cfg.compile:
        engine.compile()  # as train.loop.setup does
    model_cfg = model.config
    # CPU batches, as the trainer's loader yields them; train_step copies them to the device.
    batches, distinct = token_batches(model_cfg.vocab_size, micro_batch, model_cfg.seq_len, tokens,
                                      torch.device("cpu"), seed)
    stream = itertools.cycle(batches)
    run_device = engine.device

    for _ in range(warmup):
        train_step(engine, stream, grad_accum, run_device, model_cfg, 1)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start, executed = time.perf_counter(), 0.0
    for _ in range(steps):
        loss_sum, step_flops = train_step(engine, stream, grad_accum, run_device, model_cfg, 1)
        executed += step_flops
    synchronize(device)
    elapsed = time.perf_counter() - start
    final_loss = loss_sum.item() / grad_accum
    if not torch.isfinite(torch.tensor(final_loss)):
        raise RuntimeError(f"non-finite loss {final_loss}")
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    n_tokens = steps * grad_accum * micro_batch * model_cfg.seq_len
    flops = training_flops_per_token(model_cfg)
    peak_flops = device_peak_flops() if device.type == "cuda" else None
    row = {
        "micro_batch": micro_batch, "grad_accum": grad_accum, "seq_len": model_cfg.seq_len, "steps": steps,
        "step_time_s": elapsed / steps, "tokens_per_s": n_tokens / elapsed, "flops_per_token": flops,
        "mfu": None if peak_flops is None else n_tokens / elapsed * flops / peak_flops,
        # The trainer's own accounting (batch_flops: the sense network once per distinct token).
        "mfu_executed": None if peak_flops is None else executed / elapsed / peak_flops,
        "peak_memory_gib": peak, "distinct_token_fraction": distinct, "final_loss": final_loss,
        "ds_config": cfg.ds_config, "zero_stage": engine.zero_optimization_stage(),
        "bf16": engine.bfloat16_enabled(), "gradient_clipping": engine.gradient_clipping(),
        "sense_sum_resolved": None, "implementation": model.implementation(), "profile": None,
    }
    if hasattr(engine, "destroy"):  # frees its hooks and buffers before the next row
        engine.destroy()
    return row
