"""Shared memory that killed processes left in /dev/shm: removed when a training job starts
(and by the test session), while a live dataset's stays."""

import os
import signal
import subprocess
import sys

import pytest
from train_helpers import env, run_training, tiny_run_args

from backpack_dist.streaming_memory import SHM, STREAMING_FILE, remove_stale

# A process that opens the training split as the trainer does, prints its shared-memory prefix and waits.
HOLDER = """\

import sys, time
from streaming import StreamingDataset
dataset = StreamingDataset(local=sys.argv[1], shuffle=False, batch_size=1)
dataset[0]
print(f"{dataset._shm_prefix_int:06d}", flush=True)
time.sleep(600)
"""


def prefixes() -> set[str]:
    return {m.group(1) for m in map(STREAMING_FILE.fullmatch, os.listdir(SHM)) if m}


def start_holder(split) -> tuple[subprocess.Popen, set[str]]:
    """A live StreamingDataset in another process (a session of its own), and its prefix."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(split)], stdout=subprocess.PIPE, text=True, env=env(),
                            start_new_session=True)
    prefix = proc.stdout.readline().strip()
    assert prefix in prefixes(), f"the dataset registered no shared memory ({prefix!r})"
    return proc, {prefix}


def kill_job(proc) -> None:
    """SIGKILL to the whole process group, as SLURM or the OOM killer end a job: Python's resource
    tracker, which would otherwise unlink the files, dies with it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture
def split(shakespeare_data):
    return shakespeare_data / "train"


def test_only_the_killed_process_memory_is_removed(split):
    killed, killed_prefixes = start_holder(split)
    live, live_prefixes = start_holder(split)
    try:
        kill_job(killed)
        assert killed_prefixes <= prefixes(), "SIGKILL left nothing behind: nothing to test"
        removed = remove_stale()
        assert killed_prefixes <= set(removed)
        assert not killed_prefixes & prefixes()
        assert live_prefixes <= prefixes() and not live_prefixes & set(removed)  # still in use: kept
    finally:
        kill_job(live)
    assert live_prefixes <= set(remove_stale())  # its owner gone, it is stale too


def test_training_removes_what_killed_processes_left(shakespeare_data, split, tmp_path):
    killed, killed_prefixes = start_holder(split)
    kill_job(killed)
    assert killed_prefixes <= prefixes()
    result = run_training(1, tiny_run_args("backpack-micro", shakespeare_data, tmp_path / "run", steps=2))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "removed the streaming shared memory of" in result.stdout and not killed_prefixes & prefixes()


def test_a_removed_file_still_mapped_does_not_keep_a_new_one_of_its_name(tmp_path):
    """Prefixes are reused: a process that still maps a removed 000777_locals (a dataset of an
    earlier run not yet collected) says nothing about the 000777_locals there now."""
    import mmap

    old = tmp_path / "000777_locals"
    old.write_bytes(b"\0" * 4096)
    with open(old, "r+b") as f:
        mapped = mmap.mmap(f.fileno(), 0)
    try:
        assert remove_stale(tmp_path) == []  # mapped: in use
        old.unlink()
        (tmp_path / "000777_locals").write_bytes(b"\0" * 4096)  # a new registration under the same prefix
        assert remove_stale(tmp_path) == ["000777"]
        assert not (tmp_path / "000777_locals").exists()
    finally:
        mapped.close()
