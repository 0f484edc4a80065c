import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BACKPACK_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared test data not found at {data} (set BACKPACK_SHARED)")
    return data


def tiny_overrides(**extra):
    """A model small enough for CPU tests."""
    cfg = dict(d_model=32, n_layer=2, n_head=2, n_senses=4, vocab_size=101, seq_len=24, dropout=0.0)
    cfg.update(extra)
    return cfg
