"""Launching real training runs from tests: `deepspeed --num_gpus N` (gloo on CPU) or one plain process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, TINY_SIZES, as_flags  # REPO re-exported for the tests

TINY = as_flags({**TINY_SIZES, "seq_len": 64})


def train_command(nprocs: int, args: list[str], launcher: str = "deepspeed") -> list[str]:
    if nprocs == 1:
        return [sys.executable, "-m", "backpack_dist.train", *args]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nprocs), "--master_port",
                str(free_port()), "-m", "backpack_dist.train", *args]
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    return [deepspeed, "--num_gpus", str(nprocs), "--master_port", str(free_port()), "--module",
            "backpack_dist.train", *args]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_run_args(model: str, data_dir, run_dir, *, zero: int = 2, steps: int = 20, extra=()) -> list[str]:
    """The flags of a tiny run; flags in `extra` replace the defaults here (each flag is given once)."""
    flags = {"--model": model, **dict(zip(TINY[::2], TINY[1::2], strict=True)), "--data_dir": str(data_dir),
             "--run_dir": str(run_dir), "--ds_config": str(REPO / "ds_configs" / f"zero{zero}.json"),
             "--global_batch": "8", "--micro_batch": "2", "--max_steps": str(steps), "--lr": "3e-3",
             "--warmup_steps": "2", "--log_every": "1", "--eval_every": "10", "--eval_batches": "2",
             "--save_every": "10", "--wandb": "disabled", "--num_workers": "0"}
    return with_flags(flags, extra)


def without_flag(args: list[str], flag: str) -> list[str]:
    """argv without one flag and its value (the run then takes the flag's default)."""
    i = args.index(flag)
    return args[:i] + args[i + 2:]


def with_flags(defaults: dict, extra=()) -> list[str]:
    """defaults ({"--flag": "value"}) with the flag/value pairs of `extra` replacing them, as argv."""
    flags = {**defaults, **dict(zip(extra[::2], extra[1::2], strict=True))}
    return [part for flag_value in flags.items() for part in flag_value]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def run_training(nprocs: int, args: list[str], timeout: float = 300, launcher: str = "deepspeed", extra_env=None):
    """A None in `extra_env` unsets that variable."""
    job_env = {k: v for k, v in {**env(), **(extra_env or {})}.items() if v is not None}
    return subprocess.run(train_command(nprocs, args, launcher), cwd=REPO, env=job_env, capture_output=True, text=True,
                          timeout=timeout)


def start_training(nprocs: int, args: list[str], log_path, extra_env=None) -> subprocess.Popen:
    """The job in a session of its own: os.killpg(proc.pid, ...) reaches every process of it. A None
    in `extra_env` unsets that variable."""
    log = open(log_path, "w")
    job_env = {k: v for k, v in {**env(), **(extra_env or {})}.items() if v is not None}
    return subprocess.Popen(train_command(nprocs, args), cwd=REPO, env=job_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_until(predicate, proc, what, timeout=300):
    """Poll until predicate() holds; fail if the job `proc` exits first or `timeout` s pass."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"the job exited ({proc.returncode}) before {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_lines(run_dir) -> dict[int, dict]:
    """step -> the deterministic fields of its training line (not throughput)."""
    keys = ("loss", "lr", "grad_norm", "tokens_seen")
    return {m["step"]: {k: m[k] for k in keys} for m in metrics(run_dir) if "loss" in m}
