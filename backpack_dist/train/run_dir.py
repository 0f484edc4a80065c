"""The run directory and the resume policy: what a run dir records about its run (config.json),
what must not change when it is resumed, and how a checkpoint is resumed on another number of
processes. One job per run dir is run_lock.py's."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from .. import atomic, checkpoint
from ..model.config import OVERRIDABLE
from ..tokenizer import GPT2
from . import exactness
from .config import ConfigError, TrainConfig, load_ds_config
from .engine import use_bf16

# Settings that must not change when a run directory is resumed (--max_steps, --lr and the schedule may).
RESUME_INVARIANTS = ("model", "global_batch", "seed", *OVERRIDABLE)


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


# What config.json holds beside the options: `--config RUN/config.json` skips these (and says so).
RECORDED_KEYS = ("data", "checkpoint_layout", exactness.CONFIG_KEY)


def write_run_config(cfg: TrainConfig, data_info: dict, cpu_threads: int | None = None) -> None:
    """RUN/config.json: the options (accepted back as --config, to re-create the run) and RECORDED_KEYS."""
    record = {**cfg.to_dict(), "data": data_identity(data_info), "checkpoint_layout": checkpoint_layout(cfg),
              exactness.CONFIG_KEY: cpu_threads}
    atomic.write_json(Path(cfg.run_dir) / "config.json", record, indent=2)


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


def choose_resume_step(run_dir: Path, rank: int) -> int | None:
    """Collective: the newest intact complete checkpoint's step (None: start afresh). Rank 0
    checks the files against COMPLETE's sums, sets each damaged newer checkpoint aside (renamed,
    never deleted) with one line saying what it found, and broadcasts its decision so that every
    rank takes the same one. Checkpoints exist but none is intact: ConfigError (exit 2)."""
    decision = [None]
    if rank == 0:
        decision[0] = _newest_intact_step(checkpoint.checkpoints_dir(run_dir))
    torch.distributed.broadcast_object_list(decision, src=0)
    step = decision[0]
    if isinstance(step, str):
        raise ConfigError(step)
    return step


def _newest_intact_step(ckpt_dir: Path) -> int | str | None:
    """Rank 0's part of choose_resume_step: a step, None, or the error line. Damaged checkpoints
    are set aside only when an intact one is found: with none intact nothing is touched, and every
    rerun stops the same way until the files are restored."""
    from .. import checkpoint_integrity as integrity

    steps = checkpoint.complete_steps(ckpt_dir)
    damaged = []  # (step, problem), newest first
    for step in reversed(steps):
        folder = ckpt_dir / checkpoint.tag_for_step(step)
        if not integrity.has_sums(folder):
            print(f"note: {folder} was saved without file sums (an older version); resuming from it unchecked",
                  flush=True)
            problem = None
        else:
            problem = integrity.damage(folder)
        if problem is None:
            for bad, why in damaged:
                moved = integrity.set_aside(ckpt_dir / checkpoint.tag_for_step(bad))
                print(f"checkpoint step {bad} is damaged: {why}; set aside as {moved}, resuming from step {step}",
                      flush=True)
            if damaged:
                atomic.write_text(ckpt_dir / checkpoint.LATEST, folder.name + "\n")
            return step
        damaged.append((step, problem))
    if not steps:
        return None
    return (f"no intact checkpoint in {ckpt_dir}: " + "; ".join(f"step {s}: {why}" for s, why in damaged)
            + "; restore the files from a copy, or move the step folders away to start the run afresh")
