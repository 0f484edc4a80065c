from pathlib import Path

import pytest
from common import SHARED


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared test data not found at {data} (set BACKPACK_SHARED)")
    return data
