"""The training loop: data -> DeepSpeed engine -> metrics, checkpoints and a clean stop on
SIGUSR1/SIGTERM (save at the next step boundary, exit PREEMPTED_EXIT_CODE).

setup() does everything before the first step; loop() is the loop, read top to bottom in nanoGPT's
order: the lr, validate and save, stop, accumulate and step, log."""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint
from ..data import TokenStream, one_job_registers_at_a_time
from ..model import ModelConfig, model_config, model_from_config
from ..model.backpack import distinct_tokens
from ..model.flops import batch_flops
from . import exactness, failpoints
from .config import (
    PREEMPTED_EXIT_CODE,
    TrainConfig,
    check_data_fits_model,
    check_data_fits_run,
    grad_accumulation_steps,
    load_ds_config,
    validate,
)
from .engine import build_engine, init_distributed
from .guards import BadSteps, StepLosses, StopRequest
from .init_from import initial_weights
from .metrics import MetricsLog, Throughput, device_peak_flops
from .run_dir import (
    check_run_dir,
    choose_resume_step,
    plan_resume,
    read_data_info,
    read_tokenizer_file,
    remote_split,
    write_run_config,
)
from .run_lock import hold_run_dir
from .validation import Validation


def report(message: str, bar=None) -> None:
    """A line on stderr that does not get tangled with the progress bar."""
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclasses.dataclass
class Run:
    """A run as setup() leaves it: the engine, its data, where it is, and where it writes."""

    cfg: TrainConfig
    engine: object
    stream: TokenStream
    val: Validation | None
    model_cfg: ModelConfig
    data_info: dict
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    accum: int
    seq_len: int
    tokenizer_file: bytes | None
    step: int
    tokens_seen: int
    log: MetricsLog | None
    bar: object
    lock: object = None  # rank 0's hold on RUN/.train.lock: an open file, released when it closes

    def client_state(self) -> dict:
        """What a checkpoint holds beside DeepSpeed's own state: where the run is, and what it is."""
        return {"step": self.step, "tokens_seen": self.tokens_seen, "loader": self.stream.state_dict(),
                "run_config": self.cfg.to_dict(), "model_name": self.cfg.model,
                "model_config": self.model_cfg.to_dict(), "tokenizer": self.data_info["tokenizer"]}


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A batch tensor on the device; on a GPU copied from pinned memory, so non_blocking means it
    (from pageable memory CUDA copies synchronously)."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def train_step(engine, stream, accum: int, device, model_cfg, world: int):
    """One optimizer step over `accum` micro batches: (summed loss on this rank, a device scalar
    left unread; model FLOPs of all ranks)."""
    loss_sum, flops = torch.zeros((), device=device), 0.0
    for _ in range(accum):
        x, y = next(stream)
        # A Backpack's distinct ids, found here on the CPU copy: in forward they would sync the GPU.
        tokens = distinct_tokens(x) if model_cfg.is_backpack else None
        flops += batch_flops(model_cfg, x, None if tokens is None else tokens[0]) * world
        extra = {} if tokens is None else {"unique_tokens": tuple(to_device(t, device) for t in tokens)}
        x, y = to_device(x, device), to_device(y, device)
        loss = engine(x, targets=y, **extra)
        engine.backward(loss)
        engine.step()  # DeepSpeed clips and steps the optimizer only at the accumulation boundary
        loss_sum += loss.detach().float()
    return loss_sum, flops


def sense_probes(engine, model_cfg, tokenizer_spec: str, words, rank: int) -> dict:
    """{"probes": ..., "probe_seconds": s} on rank 0 (see senses/probes.py), {} elsewhere. Under
    ZeRO-3 every rank takes part in gathering the weights, which rank 0 probes in a copy (the
    engine's hooks would partition them again after each submodule)."""
    from ..senses import probes
    from ..tokenizer import load_tokenizer

    started = time.perf_counter()
    model = engine.module
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()} if rank == 0 else None
        if rank == 0:
            device = next(engine.module.parameters()).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # dropout's RNG stays put
                model = model_from_config(model_cfg).to(device)
            model.load_state_dict(state)
    if rank != 0:
        return {}
    result = probes.measure(model, load_tokenizer(tokenizer_spec), words)
    return {"probes": result, "probe_seconds": time.perf_counter() - started}


def setup(cfg: TrainConfig) -> Run:
    """Everything before the first step: checks, processes, the run dir, model and engine, data,
    and the resume from the newest complete checkpoint."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    validate(cfg, world)
    data_info = read_data_info(cfg)
    model_cfg = model_config(cfg.model, **cfg.model_overrides)
    init_state = None
    if cfg.init_from is not None:
        init_state, model_cfg = initial_weights(cfg, data_info)
    check_data_fits_model(data_info, model_cfg.vocab_size, model_cfg.seq_len)
    check_data_fits_run(data_info, cfg.micro_batch, world, cfg.num_canonical_nodes)
    seq_len = data_info["seq_len"]
    check_run_dir(cfg, data_info)

    init_distributed()
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    run_dir = Path(cfg.run_dir)
    lock = None
    # Before rank 0 rewrites config.json: a resume reads the thread count recorded there.
    cpu_threads = exactness.settle_cpu_threads(run_dir, device.type == "cuda", report if rank == 0 else lambda m: None)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = hold_run_dir(run_dir)  # held as long as the Run is: until the process ends
        write_run_config(cfg, data_info, cpu_threads)
        if seq_len < model_cfg.seq_len:
            report(f"warning: the data's samples hold {seq_len} tokens but the model's context is {model_cfg.seq_len}; "
                   f"positions past {seq_len} are never trained (prepare the data with --seq_len {model_cfg.seq_len})")

    resume_step = choose_resume_step(run_dir, rank)  # the newest intact one; damaged ones set aside
    ds_base, resume_tag = plan_resume(load_ds_config(cfg.ds_config), run_dir, resume_step, rank, world)

    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = model_from_config(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.set_implementation(loss=cfg.loss_impl, **({"sense_sum": cfg.sense_sum} if model_cfg.is_backpack else {}))
    engine, _, _ = build_engine(model, cfg, ds_base, world)
    if cfg.compile:
        engine.compile()  # DeepSpeed's wrapper keeps state_dict keys free of torch.compile's prefix
    seed_everything(cfg.seed + 1 + rank)  # distinct dropout masks per rank

    accum = grad_accumulation_steps(cfg.global_batch, cfg.micro_batch, world)
    with one_job_registers_at_a_time():
        stream = TokenStream(
            os.path.join(cfg.data_dir, "train"), remote=remote_split(cfg, "train"),
            micro_batch=cfg.micro_batch, seq_len=seq_len, shuffle=True, seed=cfg.seed,
            num_canonical_nodes=cfg.num_canonical_nodes, num_workers=cfg.num_workers, world_size=world)
        # Its workers ignore stop signals, so they must be stopped before multiprocessing's own exit
        # hook waits for them (atexit runs the hooks registered last first).
        atexit.register(stream.close)
        val = None
        if data_info["splits"].get("val", {}).get("samples", 0) > 0:
            val = Validation(os.path.join(cfg.data_dir, "val"), remote=remote_split(cfg, "val"),
                             samples=cfg.eval_batches * cfg.micro_batch, micro_batch=cfg.micro_batch,
                             seq_len=seq_len, rank=rank, world=world)

    step, tokens_seen = 0, 0
    if resume_step is not None:
        client = checkpoint.load(engine, run_dir, resume_step, tag=resume_tag)
        step, tokens_seen = client["step"], client["tokens_seen"]
        stream.load_state_dict(client["loader"])
        # The optimizer comes back with the lr of the schedule it was saved under; a resume may
        # change --max_steps or --lr, and the first step must already follow the new schedule.
        for group, lr in zip(engine.lr_scheduler.optimizer.param_groups, engine.lr_scheduler.get_lr(), strict=True):
            group["lr"] = lr
        if rank == 0:
            print(f"resumed from {checkpoint.checkpoints_dir(run_dir) / checkpoint.tag_for_step(step)}", flush=True)
    tokenizer_file = read_tokenizer_file(data_info["tokenizer"], rank)
    log = MetricsLog(run_dir, wandb_mode=cfg.wandb, project=cfg.wandb_project, config=cfg.to_dict(),
                     resume_step=step) if rank == 0 else None
    bar = None
    if rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.model}", unit="step", dynamic_ncols=True)
    return Run(cfg=cfg, engine=engine, stream=stream, val=val, model_cfg=model_cfg, data_info=data_info,
               run_dir=run_dir, device=device, rank=rank, world=world, accum=accum, seq_len=seq_len,
               tokenizer_file=tokenizer_file, step=step, tokens_seen=tokens_seen, log=log, bar=bar, lock=lock)


def validate_and_log(run: Run) -> None:
    """The validation loss (and the sense probes, when asked) of the weights as they are now."""
    val_loss = run.val.loss(run.engine, run.device)
    record = {"step": run.step, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700))}
    if run.cfg.probes:
        record.update(sense_probes(run.engine, run.model_cfg, run.data_info["tokenizer"], run.cfg.probe_words,
                                   run.rank))
    if run.rank == 0:
        run.log.log(record)


def loop(run: Run) -> int:
    """Steps until --max_steps; the exit status (0, 3 after too many bad steps, PREEMPTED_EXIT_CODE).
    Read top to bottom as nanoGPT's: the lr, validate and save what the steps so far made, stop,
    accumulate and step, log."""
    cfg, engine, rank = run.cfg, run.engine, run.rank
    stop, bad = StopRequest(), BadSteps(cfg.max_bad_steps)
    losses = StepLosses(run.accum * run.world)
    throughput = Throughput(device_peak_flops(), run.world)
    step_tokens = cfg.global_batch * run.seq_len
    failpoints.install(engine.module, lambda: run.step + 1)
    engine.train()
    first_step = run.step  # 0, or the step this process resumed from (already validated and saved)
    while True:
        lr = engine.optimizer.param_groups[0]["lr"]  # the schedule's lr for the next step
        if run.step > first_step:
            if run.val is not None and (run.step % cfg.eval_every == 0 or run.step == cfg.max_steps):
                validate_and_log(run)
            stopping = stop.agreed()  # every rank stops at the same step, or none does
            if checkpoint.save_due(run.step, cfg.max_steps, cfg.save_every, stopping):
                checkpoint.save(engine, run.run_dir, run.step, run.client_state(), cfg.keep,
                                tokenizer_file=run.tokenizer_file)
            if stopping:
                if rank == 0:
                    report(f"stopped by signal {stop.signum or 'on another rank'} after saving step {run.step}; "
                           f"re-run the same command to resume", run.bar)
                return PREEMPTED_EXIT_CODE
        if run.step >= cfg.max_steps:
            return 0

        loss_sum, flops = train_step(engine, run.stream, run.accum, run.device, run.model_cfg, run.world)
        run.step += 1
        run.tokens_seen += step_tokens
        throughput.add(step_tokens, flops)
        if run.stream.with_ids:
            from .. import sample_ids

            sample_ids.log_step(run.run_dir, run.step, run.stream.take_sample_ids())
        losses.add(loss_sum)
        bad_step = bad.update(engine.was_step_applied())  # DeepSpeed's own flag: no read of ours
        log_now = run.step % cfg.log_every == 0
        if bad_step or log_now:
            # The only reads of the device per step: at log steps and bad ones, which every rank
            # agrees on (DeepSpeed agrees on skipped steps), as the all-reduce needs.
            loss = losses.read()[-1]
            grad_norm = engine.get_global_grad_norm()
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        if bad_step and rank == 0:
            report(f"step {run.step}: {BadSteps.describe(loss)} (grad norm {grad_norm}); update skipped "
                   f"({bad.in_a_row} in a row)", run.bar)
        if run.bar is not None:
            run.bar.update(1)
            if log_now:
                run.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        if log_now:
            if rank == 0:
                run.log.log({"step": run.step, "loss": loss, "lr": lr, "grad_norm": grad_norm, **throughput.figures(),
                             "tokens_seen": run.tokens_seen})
            throughput.reset()
        if bad.exhausted:  # before the next save: nothing bad is kept
            if rank == 0:
                report(f"error: stopping at step {run.step} after {bad.in_a_row} non-finite steps in a row; lower "
                       "--lr or check the data, then resume from the last checkpoint", run.bar)
            return 3


def train(cfg: TrainConfig) -> int:
    run = setup(cfg)
    exit_code = loop(run)
    if run.bar is not None:
        run.bar.close()
    if run.log is not None:
        run.log.close()
    torch.distributed.barrier()
    return exit_code
