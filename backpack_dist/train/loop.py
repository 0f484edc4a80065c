"""The training loop: data -> DeepSpeed engine -> metrics, checkpoints and a clean stop on
SIGUSR1/SIGTERM (save at the next step boundary, exit PREEMPTED_EXIT_CODE)."""

from __future__ import annotations

import atexit
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint
from ..data import STOP_SIGNALS, TokenStream, one_job_registers_at_a_time
from ..model import model_config, model_from_config
from ..model.config import OVERRIDABLE
from ..model.flops import training_flops_per_token
from ..tokenizer import GPT2
from . import exactness, failpoints
from .config import (
    PREEMPTED_EXIT_CODE,
    ConfigError,
    TrainConfig,
    check_data_fits_model,
    check_data_fits_run,
    grad_accumulation_steps,
    load_ds_config,
    validate,
)
from .engine import build_engine, init_distributed, use_bf16
from .init_from import initial_weights
from .metrics import MetricsLog, device_peak_flops
from .run_lock import hold_run_dir
from .validation import Validation

# Settings that must not change when a run directory is resumed.
RESUME_INVARIANTS = ("model", "global_batch", "seed", *OVERRIDABLE)


class StopRequest:
    """Remembers SIGUSR1/SIGTERM; the loop acts on it at the next step boundary, on all ranks."""

    def __init__(self):
        self.signum = 0
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def agreed(self, device) -> bool:
        flag = torch.tensor(float(self.signum), device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return flag.item() > 0


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


def data_identity(data_info: dict) -> dict:
    """What makes two data-prep outputs the same data, wherever they are stored."""
    train = data_info["splits"]["train"]
    return {"seq_len": data_info["seq_len"], "tokenizer_fingerprint": data_info["tokenizer_fingerprint"],
            "train_samples": train["samples"], "train_tokens": train["tokens"]}


def zero_stage(ds_config: dict) -> int:
    return ds_config.get("zero_optimization", {}).get("stage", 0)


def checkpoint_layout(cfg: TrainConfig) -> dict:
    """What decides the layout of DeepSpeed's checkpoint files: a resume must keep it."""
    return {"zero_stage": zero_stage(load_ds_config(cfg.ds_config)), "bf16": use_bf16(cfg)}


def describe_layout(layout: dict) -> str:
    return f"ZeRO stage {layout['zero_stage']}, {'bf16' if layout['bf16'] else 'fp32'}"


def check_run_dir(cfg: TrainConfig, data_info: dict) -> None:
    """A run dir holds one run: once it has a checkpoint, refuse to resume it with settings or data
    that change the run (before that, a failed start must not block the corrected command)."""
    saved_file = Path(cfg.run_dir) / "config.json"
    if not saved_file.exists() or checkpoint.latest_complete_step(checkpoint.checkpoints_dir(cfg.run_dir)) is None:
        return
    try:
        saved = json.loads(saved_file.read_text())
    except ValueError:
        raise ConfigError(f"{saved_file} is not valid JSON; restore it or use a new --run_dir") from None
    changed = [k for k in RESUME_INVARIANTS if saved.get(k) != getattr(cfg, k)]
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)} -> {getattr(cfg, k)}" for k in changed)
        raise ConfigError(f"run dir {cfg.run_dir} was started with different settings ({diff}); "
                          "re-run with the original flags or use a new --run_dir")
    if "data" in saved and saved["data"] != data_identity(data_info):
        diff = ", ".join(f"{k}: {saved['data'].get(k)} -> {v}" for k, v in data_identity(data_info).items()
                         if saved["data"].get(k) != v)
        raise ConfigError(f"run dir {cfg.run_dir} was trained on other data ({diff}); pass the original --data_dir "
                          "or use a new --run_dir")
    layout = checkpoint_layout(cfg)
    if "checkpoint_layout" in saved and saved["checkpoint_layout"] != layout:
        saved_layout = describe_layout(saved["checkpoint_layout"])
        raise ConfigError(f"run dir {cfg.run_dir} holds checkpoints saved with {saved_layout}, this command asks for "
                          f"{describe_layout(layout)}; resume with a --ds_config of the same stage and the same "
                          "--precision, or use a new --run_dir")


def write_run_config(cfg: TrainConfig, data_info: dict, cpu_threads: int | None = None) -> None:
    path = Path(cfg.run_dir) / "config.json"
    tmp = path.with_name(".config.json.tmp")
    record = {**cfg.to_dict(), "data": data_identity(data_info), "checkpoint_layout": checkpoint_layout(cfg),
              exactness.CONFIG_KEY: cpu_threads}
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def read_data_info(cfg: TrainConfig) -> dict:
    """dataset.json of the data-prep output; with --remote, fetched next to the local cache."""
    from data_prep import read_dataset_info

    source = cfg.data_dir
    if cfg.remote is not None:
        from streaming.base.storage import CloudDownloader

        source = os.path.join(cfg.data_dir, f".dataset-info-rank{os.environ.get('RANK', '0')}")
        target = os.path.join(source, "dataset.json")
        if os.path.exists(target):
            os.remove(target)  # always the remote's current copy
        try:
            CloudDownloader.direct_download(f"{cfg.remote.rstrip('/')}/dataset.json", target, 60)
        except Exception as e:
            raise ConfigError(f"cannot fetch {cfg.remote}/dataset.json ({e}); check --remote and credentials") from None
    try:
        return read_dataset_info(source, check_splits=cfg.remote is None)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def read_tokenizer_file(tokenizer: str, rank: int) -> bytes | None:
    """The bytes of a custom .tiktoken file, read at start (the data folder may move while the run
    goes on) so that every checkpoint carries a copy; None for GPT-2 or when it is not readable
    here (training needs only the tokens; the export then names the file it is missing)."""
    if tokenizer == GPT2:
        return None
    try:
        return Path(tokenizer).read_bytes()
    except OSError as e:
        if rank == 0:
            print(f"warning: cannot read the data's tokenizer file {tokenizer} ({e.strerror}); checkpoints will not "
                  "include it", file=sys.stderr, flush=True)
        return None


def remote_split(cfg: TrainConfig, split: str) -> str | None:
    return f"{cfg.remote.rstrip('/')}/{split}" if cfg.remote else None


def plan_resume(ds_base: dict, run_dir: Path, resume_step: int | None, rank: int, world: int):
    """(DeepSpeed config, checkpoint tag to load). On a different number of processes than the
    checkpoint was saved with, rank 0 converts it to DeepSpeed's universal format first."""
    if resume_step is None or checkpoint.saved_world_size(run_dir, resume_step) == world:
        return ds_base, None
    if zero_stage(ds_base) == 0:  # every rank saved the whole optimizer state: it loads on any number
        return ds_base, None
    if rank == 0:
        print(f"converting step {resume_step} to a universal checkpoint to resume on {world} processes", flush=True)
        checkpoint.convert_to_universal(run_dir, resume_step)
    torch.distributed.barrier()
    ds_base = {**ds_base, "checkpoint": {**ds_base.get("checkpoint", {}), "load_universal": True}}
    return ds_base, checkpoint.universal_tag(resume_step)


def train_step(engine, stream, accum: int, device, model_cfg, world: int):
    """One optimizer step over `accum` micro batches: (summed loss on this rank, model FLOPs of
    all ranks, counting the sense network once per distinct token as it runs)."""
    loss_sum, flops = torch.zeros((), device=device), 0.0
    for _ in range(accum):
        x, y = next(stream)
        unique_fraction = x.unique().numel() / x.numel()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = engine(x, targets=y)
        engine.backward(loss)
        engine.step()  # DeepSpeed steps the optimizer only at the accumulation boundary
        loss_sum += loss.detach().float()
        flops += training_flops_per_token(model_cfg, unique_fraction) * x.numel() * world
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


def train(cfg: TrainConfig) -> int:
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
    # Before rank 0 rewrites config.json: a resume reads the thread count recorded there.
    cpu_threads = exactness.settle_cpu_threads(run_dir, device.type == "cuda", report if rank == 0 else lambda m: None)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = hold_run_dir(run_dir)  # noqa: F841 - held until this process ends
        write_run_config(cfg, data_info, cpu_threads)
        if seq_len < model_cfg.seq_len:
            report(f"warning: the data's samples hold {seq_len} tokens but the model's context is {model_cfg.seq_len}; "
                   f"positions past {seq_len} are never trained (prepare the data with --seq_len {model_cfg.seq_len})")

    resume_step = checkpoint.latest_complete_step(checkpoint.checkpoints_dir(run_dir))
    ds_base, resume_tag = plan_resume(load_ds_config(cfg.ds_config), run_dir, resume_step, rank, world)

    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = model_from_config(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.set_implementation(loss=cfg.loss_impl, **({"sense_sum": cfg.sense_sum} if model_cfg.is_backpack else {}))
    engine, _, _ = build_engine(model, cfg, ds_base, world)
    if resume_step is None:
        # DeepSpeed's WarmupDecayLR starts before iteration 0 (lr 0) and the first step only moves
        # it to iteration 0 (lr 0 again); start at iteration 0 so that step s runs at iteration s - 1.
        engine.lr_scheduler.step()
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
    tokenizer = data_info["tokenizer"]
    tokenizer_file = read_tokenizer_file(tokenizer, rank)

    def client_state() -> dict:
        return {"step": step, "tokens_seen": tokens_seen, "loader": stream.state_dict(), "run_config": cfg.to_dict(),
                "model_name": cfg.model, "model_config": model_cfg.to_dict(), "tokenizer": tokenizer}

    log = MetricsLog(run_dir, wandb_mode=cfg.wandb, project=cfg.wandb_project, config=cfg.to_dict(),
                     resume_step=step) if rank == 0 else None
    stop = StopRequest()
    peak = device_peak_flops()
    bar = None
    if rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.model}", unit="step", dynamic_ncols=True)

    engine.train()
    bad_steps, last_saved = 0, step
    window_start, window_tokens, window_flops = time.perf_counter(), 0, 0.0
    exit_code = 0
    failpoints.install(engine.module, lambda: step + 1)
    while step < cfg.max_steps:
        lr = engine.optimizer.param_groups[0]["lr"]
        loss_sum, step_flops = train_step(engine, stream, accum, device, model_cfg, world)
        window_flops += step_flops
        step += 1
        if stream.with_ids:
            from .. import sample_ids

            sample_ids.log_step(run_dir, step, stream.take_sample_ids())
        step_tokens = cfg.global_batch * seq_len
        tokens_seen += step_tokens
        window_tokens += step_tokens
        torch.distributed.all_reduce(loss_sum)
        loss_value = loss_sum.item() / (accum * world)
        grad_norm = engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        # Every ZeRO stage and precision skips an update with non-finite gradients (DeepSpeed's
        # wrappers or GuardedAdamW) and holds the lr schedule; the engine says whether it applied.
        skipped = not engine.was_step_applied() or not math.isfinite(loss_value)
        bad_steps = bad_steps + 1 if skipped else 0
        if skipped and rank == 0:
            what = f"non-finite loss {loss_value}" if not math.isfinite(loss_value) else "non-finite gradients"
            report(f"step {step}: {what} (grad norm {grad_norm}); update skipped ({bad_steps} in a row)", bar)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        if rank == 0 and step % cfg.log_every == 0:
            elapsed = time.perf_counter() - window_start
            tps = window_tokens / elapsed
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tps,
                      "mfu": (window_flops / elapsed) / (peak * world) if peak else None, "tokens_seen": tokens_seen}
            log.log(record)
        if step % cfg.log_every == 0:
            window_start, window_tokens, window_flops = time.perf_counter(), 0, 0.0
        if val is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            val_loss = val.loss(engine, device)
            record = {"step": step, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700))}
            if cfg.probes:
                record.update(sense_probes(engine, model_cfg, data_info["tokenizer"], cfg.probe_words, rank))
            if rank == 0:
                log.log(record)
        if bad_steps >= cfg.max_bad_steps:
            if rank == 0:
                report(f"error: stopping at step {step} after {bad_steps} non-finite steps in a row; lower --lr or "
                       "check the data, then resume from the last checkpoint", bar)
            exit_code = 3
            break
        stop_now = stop.agreed(device)
        if step % cfg.save_every == 0 or step == cfg.max_steps or stop_now:
            checkpoint.save(engine, run_dir, step, client_state(), cfg.keep, tokenizer_file=tokenizer_file)
            last_saved = step
        if stop_now:
            if rank == 0:
                report(f"stopped by signal {stop.signum or 'on another rank'} after saving step {last_saved}; "
                       f"re-run the same command to resume", bar)
            exit_code = PREEMPTED_EXIT_CODE
            break
    if bar is not None:
        bar.close()
    if log is not None:
        log.close()
    torch.distributed.barrier()
    return exit_code
