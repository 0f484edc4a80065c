"""Training checkpoints: DeepSpeed's save/load plus what makes them safe to resume from.

Layout of RUN/checkpoints/:
  step_00000020/            DeepSpeed's files + rng_rank{r}.pt for every rank
  step_00000020/COMPLETE    written by rank 0 after every rank has finished writing, with the
                            size and xxh64 sum of every file (checkpoint_integrity.py)
  step_00000010.damaged/    a checkpoint whose files no longer match COMPLETE, set aside by a resume
  latest                    the newest complete tag (replaced atomically)
A crash mid-save leaves a folder without COMPLETE, which resume ignores.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from . import atomic, checkpoint_integrity
from .tokenizer import TOKENIZER_FILE
from .train.failpoints import pause_point

COMPLETE = "COMPLETE"
LATEST = "latest"
TAG_RE = re.compile(r"^step_(\d{8})$")


def tag_for_step(step: int) -> str:
    return f"step_{step:08d}"


def checkpoints_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def complete_steps(ckpt_dir) -> list[int]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    steps = []
    for child in ckpt_dir.iterdir():
        m = TAG_RE.match(child.name)
        if m and (child / COMPLETE).is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_complete_step(ckpt_dir) -> int | None:
    steps = complete_steps(ckpt_dir)
    return steps[-1] if steps else None


def _sync_to_disk(folder: Path) -> None:
    """Flush every file of a checkpoint to stable storage before it is marked COMPLETE: after a
    node crash a COMPLETE checkpoint must not hold truncated files (older ones are deleted)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for directory in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_due(step: int, last_step: int, every: int, stopping: bool) -> bool:
    """Whether the run saves after `step`: every `every` steps, at the last step, and before it
    stops on a signal."""
    return step % every == 0 or step == last_step or stopping


def save(engine, run_dir, step: int, client_state: dict, keep: int, tokenizer_file: bytes | None = None) -> Path:
    """Collective: every rank calls it. Returns the checkpoint folder. A custom tokenizer (the
    bytes of its .tiktoken file) is written in too, so that the checkpoint still exports after
    the data folder moved or was deleted."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    ckpt_dir = checkpoints_dir(run_dir)
    tag = tag_for_step(step)
    folder = ckpt_dir / tag
    if rank == 0 and folder.exists():  # a partial save from a crashed attempt
        shutil.rmtree(folder)
    torch.distributed.barrier()
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    # Lets DeepSpeed convert it to a universal checkpoint (resume on another number of processes).
    client_state = {**client_state, UNIVERSAL_CHECKPOINT_INFO: {
        UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    torch.save(rng_state(), folder / f"rng_rank{rank}.pt")
    if rank == 0 and tokenizer_file is not None:
        (folder / TOKENIZER_FILE).write_bytes(tokenizer_file)
    pause_point("save", step)
    torch.distributed.barrier()  # every rank has written everything
    if int(os.environ.get("LOCAL_RANK", rank)) == 0:  # one process per node flushes what its node wrote
        _sync_to_disk(folder)
    torch.distributed.barrier()
    if rank == 0:
        pause_point("before_complete", step)
        # Shared filesystem: rank 0 sees every rank's files and sums them all.
        files = checkpoint_integrity.manifest(folder)
        atomic.write_text(folder / COMPLETE, json.dumps({"step": step, "world_size": world, "files": files}) + "\n")
        pause_point("after_complete", step)
        atomic.write_text(ckpt_dir / LATEST, tag + "\n")
        for old in complete_steps(ckpt_dir)[:-keep]:
            shutil.rmtree(ckpt_dir / tag_for_step(old), ignore_errors=True)
            shutil.rmtree(ckpt_dir / universal_tag(old), ignore_errors=True)  # made to resume on other ranks
    torch.distributed.barrier()
    return folder


def saved_world_size(run_dir, step: int) -> int:
    marker = checkpoints_dir(run_dir) / tag_for_step(step) / COMPLETE
    return json.loads(marker.read_text())["world_size"]


def universal_tag(step: int) -> str:
    return tag_for_step(step) + "_universal"


def convert_to_universal(run_dir, step: int) -> str:
    """Rank 0 only: DeepSpeed's universal checkpoint of `step`, which loads on any number of
    processes (with "checkpoint": {"load_universal": true}). Returns its tag."""
    from argparse import Namespace

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    ckpt_dir = checkpoints_dir(run_dir)
    out = ckpt_dir / universal_tag(step)
    if (out / COMPLETE).is_file():
        return out.name
    shutil.rmtree(out, ignore_errors=True)
    ds_to_universal(Namespace(input_folder=str(ckpt_dir / tag_for_step(step)), output_folder=str(out),
                              num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=False))
    marker = json.loads((ckpt_dir / tag_for_step(step) / COMPLETE).read_text())
    atomic.write_text(out / COMPLETE, json.dumps({**marker, "files": checkpoint_integrity.manifest(out)}) + "\n")
    return out.name


def load(engine, run_dir, step: int, tag: str | None = None) -> dict:
    """Collective. Restores engine, optimizer, scheduler and this rank's RNG (when the world size
    is unchanged); returns the client state. `tag` overrides the folder (a universal checkpoint)."""
    ckpt_dir = checkpoints_dir(run_dir)
    universal = tag is not None
    tag = tag or tag_for_step(step)
    # DeepSpeed's ZeRO-3 universal load gives every param group the first group's settings (the
    # no-decay group then decays); they come from this run's flags, so keep them (lr: the schedule's).
    groups = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in engine.optimizer.param_groups]
    _, client_state = engine.load_checkpoint(
        str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
    if universal:
        for group, settings in zip(engine.optimizer.param_groups, groups, strict=True):
            group.update(settings)
        # It also puts one `step` tensor in the state of every parameter partition; Adam adds 1 to
        # it in place for each of them, so the bias correction would count every step twice.
        inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
        for state in inner.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].clone()
    if client_state is None:
        raise RuntimeError(f"could not load checkpoint {ckpt_dir / tag}")
    rng_file = ckpt_dir / tag / f"rng_rank{torch.distributed.get_rank()}.pt"
    if saved_world_size(run_dir, step) == torch.distributed.get_world_size() and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return client_state


def _resolve_checkpoint(path: Path, step: int | None = None) -> tuple[Path, str]:
    """A run dir, its checkpoints/ dir, or one step folder -> (checkpoints dir, tag)."""
    if not path.exists():
        raise ValueError(f"{path} does not exist (give a run dir, its checkpoints/ or one step_N folder)")
    if (path / "model.safetensors").is_file():
        raise ValueError(f"{path} is already an export (model.safetensors): load it directly, nothing to export")
    if TAG_RE.match(path.name):
        if not (path / COMPLETE).is_file():
            raise ValueError(f"checkpoint {path} is incomplete (no {COMPLETE} marker): its save was interrupted")
        check_intact(path.parent, path.name)
        return path.parent, path.name
    ckpt_dir = path if path.name == "checkpoints" else checkpoints_dir(path)
    steps = complete_steps(ckpt_dir)
    if not steps:
        raise ValueError(f"{path} has no complete checkpoint (looked in {ckpt_dir})")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"{path} has no complete checkpoint for step {step}; available: {steps}")
    check_intact(ckpt_dir, tag_for_step(step))
    return ckpt_dir, tag_for_step(step)


def check_intact(ckpt_dir: Path, tag: str) -> None:
    """Read-only tools: a damaged checkpoint is a ValueError naming the file and the intact steps
    to use instead (nothing is renamed); one without sums (saved before they were recorded) is read
    with a note."""
    folder = Path(ckpt_dir) / tag
    if not checkpoint_integrity.has_sums(folder):
        print(f"note: {folder} was saved without file sums (an older version); reading it unchecked",
              file=sys.stderr)
        return
    problem = checkpoint_integrity.damage(folder)
    if problem is None:
        return
    intact = [s for s in complete_steps(ckpt_dir) if tag_for_step(s) != tag
              and checkpoint_integrity.damage(Path(ckpt_dir) / tag_for_step(s)) is None]
    instead = (f"use --step {intact[-1]} or the folder {Path(ckpt_dir) / tag_for_step(intact[-1])} (intact steps: "
               f"{intact})" if intact else "no other checkpoint is intact")
    raise ValueError(f"checkpoint {folder} is damaged: {problem}; {instead}")


def consolidated_state_dict(ckpt_dir: Path, tag: str) -> dict:
    """Full fp32 weights from any ZeRO stage, via DeepSpeed's own consolidation."""
    folder = ckpt_dir / tag
    if any(folder.glob("*optim_states.pt")) and any(folder.glob("*zero_pp_rank_*")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag, lazy_mode=True)
        return {k: v.contiguous() for k, v in state.items()}
    # Stage 0 in fp32: the model states file holds the full module.
    states = torch.load(_rank0_model_states(folder), map_location="cpu", weights_only=False, mmap=True)
    return {k: v.float() for k, v in states["module"].items()}


def _rank0_model_states(folder: Path) -> Path:
    """DeepSpeed names rank 0's file mp_rank_00_model_states.pt, or zero_pp_rank_0_... under ZeRO-3."""
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder} holds no DeepSpeed model states file; is it a backpack-dist checkpoint?")


def read_run_state(ckpt_dir: Path, tag: str) -> dict:
    """The client state saved with a checkpoint (run config, step, loader state)."""
    states = torch.load(_rank0_model_states(ckpt_dir / tag), map_location="cpu", weights_only=False, mmap=True)
    keep = ("step", "run_config", "model_name", "model_config", "tokenizer", "tokens_seen")
    return {k: states[k] for k in keep if k in states}


def export_in_memory(path, step: int | None = None):
    """(state_dict, ModelConfig, info, tokenizer spec) of a run's newest (or given) complete checkpoint."""
    from .model import ModelConfig

    ckpt_dir, tag = _resolve_checkpoint(Path(path), step)
    run_state = read_run_state(ckpt_dir, tag)
    config = ModelConfig.from_dict(run_state["model_config"])
    # DeepSpeed's consolidation prints progress on stdout, which would corrupt the tools' --json output.
    with contextlib.redirect_stdout(sys.stderr):
        state_dict = consolidated_state_dict(ckpt_dir, tag)
    info = {"model_name": run_state["model_name"], "step": run_state["step"],
            "checkpoint": str((ckpt_dir / tag).absolute()), "tokens_seen": run_state.get("tokens_seen")}
    bundled = ckpt_dir / tag / TOKENIZER_FILE
    return state_dict, config, info, str(bundled) if bundled.is_file() else run_state["tokenizer"]
