"""Shared memory that killed processes left in /dev/shm: removed when a training job starts
(and by the test session), while a live dataset's stays, though every dataset registered after
the killed one maps its files."""

import os
import signal
import subprocess
import sys
import time

import pytest
from train_helpers import env, run_training, tiny_run_args

from backpack_dist.streaming_memory import OWNER_RECORD, SHM, STREAMING_FILE, registered_here, remove_stale

# A process that opens the training split as the trainer does (registering under the node's lock,
# recording itself as the owner), prints its shared-memory prefix and waits.
HOLDER = """\

import sys, time
from streaming import StreamingDataset
from backpack_dist.streaming_memory import node_lock, registered_here
with node_lock(), registered_here():
    dataset = StreamingDataset(local=sys.argv[1], shuffle=False, batch_size=1)
dataset[0]
print(f"{dataset._shm_prefix_int:06d}", flush=True)
time.sleep(600)
"""


def prefixes() -> set[str]:
    return {m.group(1) for m in map(STREAMING_FILE.fullmatch, os.listdir(SHM)) if m}


def mapped_by(proc) -> set[str]:
    """The streaming prefixes whose files the process maps."""
    with open(f"/proc/{proc.pid}/maps") as maps:
        return {m.group(1) for line in maps if (m := STREAMING_FILE.search(line))}


def start_holder(split, tmp) -> tuple[subprocess.Popen, set[str]]:
    """A live StreamingDataset in another process (a session of its own), and its prefix. A temp
    folder of its own, as a SLURM job's: streaming skips, without opening, a prefix whose file
    locks it finds in the temp folder, so in a shared one a later dataset may or may not map an
    earlier one's files (the killed job's did, in a full test run)."""
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(split)], stdout=subprocess.PIPE, text=True,
                            env={**env(), "TMPDIR": str(tmp)}, start_new_session=True)
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


def test_only_the_killed_process_memory_is_removed(split, tmp_path):
    killed, killed_prefixes = start_holder(split, tmp_path / "killed")
    try:
        live, live_prefixes = start_holder(split, tmp_path / "live")
    except BaseException:
        kill_job(killed)
        raise
    try:
        assert killed_prefixes <= mapped_by(live), "the later dataset does not map the earlier one's files"
        kill_job(killed)
        assert killed_prefixes <= prefixes(), "SIGKILL left nothing behind: nothing to test"
        removed = remove_stale()
        assert killed_prefixes <= set(removed)
        assert not killed_prefixes & prefixes()
        assert live_prefixes <= prefixes() and not live_prefixes & set(removed)  # still in use: kept
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                kill_job(proc)
    assert live_prefixes <= set(remove_stale())  # its owner gone, it is stale too


def test_training_removes_what_killed_processes_left(shakespeare_data, split, tmp_path):
    killed, killed_prefixes = start_holder(split, tmp_path / "killed")
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


def test_a_prefix_of_someone_elses_code_is_kept_while_mapped_and_an_outdated_owner_record_ignored(tmp_path):
    """Without an owner record (a dataset our code did not register) a prefix is stale only once
    nothing maps it. A record of a prefix that closed cleanly and was taken again (a new _locals
    file) says nothing about the new one, and goes."""
    import mmap

    locals_file = tmp_path / "000123_locals"
    locals_file.write_bytes(b"\0" * 4096)
    with registered_here(tmp_path):  # as if this process had registered it: a record, then a clean close
        (tmp_path / "000124_locals").write_bytes(b"\0" * 4096)
    (record,) = [p.name for p in tmp_path.iterdir() if OWNER_RECORD.fullmatch(p.name)]
    assert record.startswith(f"backpack-dist-owner.000124.{os.getpid()}.")
    (tmp_path / "000124_locals").unlink()
    time.sleep(0.05)  # past the file-time granularity: the same inode may come back
    (tmp_path / "000124_locals").write_bytes(b"\0" * 4096)  # someone else's dataset takes the prefix
    with open(locals_file, "r+b") as f, open(tmp_path / "000124_locals", "r+b") as g:
        mapped = [mmap.mmap(f.fileno(), 0), mmap.mmap(g.fileno(), 0)]
    try:
        assert remove_stale(tmp_path) == []
        assert not (tmp_path / record).exists()  # outdated: removed, and it did not mark 000124 live or dead
    finally:
        for m in mapped:
            m.close()
    assert remove_stale(tmp_path) == ["000123", "000124"]


def test_a_recorded_owner_that_is_gone_makes_its_prefix_stale_though_others_map_it(tmp_path):
    import mmap

    with registered_here(tmp_path):
        (tmp_path / "000200_locals").write_bytes(b"\0" * 4096)
    (record,) = [p for p in tmp_path.iterdir() if OWNER_RECORD.fullmatch(p.name)]
    with open(tmp_path / "000200_locals", "r+b") as f:
        mapped = mmap.mmap(f.fileno(), 0)
    try:
        assert remove_stale(tmp_path) == []  # this process, its owner, runs
        prefix, pid, start, locals_file = OWNER_RECORD.fullmatch(record.name).groups()
        record.rename(tmp_path / f"backpack-dist-owner.{prefix}.{pid}.{int(start) + 1}.{locals_file}")  # a reused pid
        assert remove_stale(tmp_path) == ["000200"]
        assert not list(tmp_path.iterdir())
    finally:
        mapped.close()
