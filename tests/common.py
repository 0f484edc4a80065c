"""Shared test constants and helpers (import as `from common import ...`; conftest.py is not
importable by name because tests/cluster has its own)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BACKPACK_SHARED", REPO.parent / "shared")).resolve()


def tiny_overrides(**extra):
    """A model small enough for CPU tests."""
    cfg = dict(d_model=32, n_layer=2, n_head=2, n_senses=4, vocab_size=101, seq_len=24, dropout=0.0)
    cfg.update(extra)
    return cfg
