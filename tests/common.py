"""Shared test constants and helpers (import as `from common import ...`; conftest.py is not
importable by name because tests/cluster has its own)."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BACKPACK_SHARED", REPO.parent / "shared")).resolve()


# The tests' tiny model: the sizes every CPU test builds on (the rest varies per test).
TINY_SIZES = dict(d_model=32, n_layer=2, n_head=2, n_senses=4)


def tiny_overrides(**extra):
    """A model small enough for CPU tests, with a tiny vocabulary and context."""
    return {**TINY_SIZES, "vocab_size": 101, "seq_len": 24, "dropout": 0.0, **extra}


def as_flags(settings: dict) -> list[str]:
    """{"d_model": 32, ...} as command-line flags ["--d_model", "32", ...]."""
    return [part for key, value in settings.items() for part in (f"--{key}", str(value))]


def apt_install(packages: list[str], missing) -> str | None:
    """Install Debian packages with apt-get when `missing()` (the programs not found) is non-empty.
    None when nothing is missing afterwards, else one line saying why: the caller skips with it."""
    if not missing():
        return None
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing())} not installed and there is no apt-get to install {', '.join(packages)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
        try:
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` timed out"
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            return f"`{' '.join(cmd)}` failed: {output[-1] if output else f'exit {result.returncode}'}"
    still = missing()
    return f"installed {', '.join(packages)} but {', '.join(still)} still missing" if still else None
