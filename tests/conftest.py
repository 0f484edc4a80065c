import os
from pathlib import Path

import pytest
from common import SHARED

# Under CI only the GPU tests may skip: a test that would skip for a missing browser, cluster,
# root or shared data is what a user relies on, so there it fails, naming what is missing.
STRICT = bool(os.environ.get("CI"))
MAY_SKIP = "gpu"


def _skip_reason(report) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


def _fail_instead(report, where: str) -> None:
    report.outcome = "failed"
    report.longrepr = f"CI is set and only GPU tests may skip, but {where} would skip: {_skip_reason(report)}"


@pytest.fixture(scope="session", autouse=True)
def no_stale_streaming_memory():
    """Remove mosaicml-streaming's shared memory left by killed processes (earlier runs, the crash
    tests' SIGKILLs) before the first test: every new StreamingDataset opens, and keeps open, the
    files of each prefix already in /dev/shm, so a few hundred stale prefixes exhaust this process's
    file descriptors. A live job's prefixes (another test run on the machine) stay."""
    from backpack_dist.streaming_memory import remove_stale

    remove_stale()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail") and MAY_SKIP not in item.keywords:
        _fail_instead(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = (yield).get_result()
    # A module-level skip (pytest.importorskip at import): the module's tests never run.
    if STRICT and report.skipped and not isinstance(collector, pytest.Session):
        _fail_instead(report, collector.nodeid)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared test data not found at {data} (set BACKPACK_SHARED)")
    return data


@pytest.fixture(scope="session")
def wikitext_data(tmp_path_factory, shared_data) -> Path:
    """WikiText-2's test split as a tiny run's data: samples of 65 tokens, 5% held out. Read only."""
    from data_prep import prepare_and_merge

    out = tmp_path_factory.mktemp("wikitext") / "wikitext"
    prepare_and_merge([shared_data / "wikitext2" / "wiki.test.raw"], out, seq_len=64, val_fraction=0.05)
    return out


@pytest.fixture(scope="session")
def eval_models(tmp_path_factory, shared_data) -> dict:
    """Exported tiny models for the eval tests: {"backpack", "transformer", "random"} -> folder."""
    from eval_fixtures import build_eval_models

    return build_eval_models(tmp_path_factory.getbasetemp() / "eval_models", shared_data)


@pytest.fixture(scope="session")
def shakespeare_data(tmp_path_factory, shared_data) -> Path:
    """tinyshakespeare as a tiny run's data: samples of 65 tokens, 5% held out. Read only."""
    from data_prep import prepare_and_merge

    out = tmp_path_factory.mktemp("shakespeare") / "shakespeare"
    prepare_and_merge([shared_data / "tinyshakespeare" / "input.txt"], out, seq_len=64, val_fraction=0.05)
    return out
