"""mosaicml-streaming's shared memory left behind by killed processes.

Each StreamingDataset registers under a numbered prefix in /dev/shm (000123_locals, _barrier,
...) and removes those files when it is closed; a process killed by SIGKILL (the OOM killer, a
SLURM job past its grace period) leaves them. Every later dataset on the node opens, and keeps
open until it exits, the files of each prefix already there (streaming checks them for a clash
of local folders), so after enough kills a trainer runs out of file descriptors, and "some
process maps it" does not mean "its owner lives".

streaming's own clean_stale_shared_memory removes every prefix, a live job's too, and stops at
the first gap in the numbering. This removes, of this user's prefixes:
- those our jobs registered (`registered_here` leaves an owner record beside them: pid, process
  start time, the _locals file's identity) once no recorded owner runs, whoever maps them;
- the others (registered by someone else's code) only when no process has them open or mapped.
"No process" means none that /proc shows: a job in another PID namespace sharing this /dev/shm
(a container run with --ipc=host) would look dead, so such setups need their own /dev/shm per
container (the default)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

SHM = Path("/dev/shm")
STREAMING_FILE = re.compile(r"(\d{6})_(locals|barrier|next_epoch|cache_usage|shard_states|shard_access_times|resume|"
                            r"epoch_shape|epoch_data)")
# backpack-dist-owner.PREFIX.PID.START.FILE: PID, started at START (clock ticks since boot, so a
# reused pid does not count), registered PREFIX, whose _locals file was FILE (inode and change
# time: a prefix taken by another dataset after a clean close has a new file, maybe the same inode).
OWNER_RECORD = re.compile(r"backpack-dist-owner\.(\d{6})\.(\d+)\.(\d+)\.(\d+x\d+)")
LOCK_NAME = "backpack-dist-streaming.lock"


def _lock_folder() -> str:
    return str(SHM) if SHM.is_dir() else "/tmp"


@contextlib.contextmanager
def node_lock():
    """The node's registration lock, held by one process of ours at a time: two datasets created at
    the same moment can take the same prefix (FileExistsError: '/000193_locals')."""
    lock = os.open(os.path.join(_lock_folder(), LOCK_NAME), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # releases the flock


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _mine(path: Path) -> bool:
    try:
        return path.stat().st_uid == os.getuid()
    except FileNotFoundError:
        return False


def streaming_prefixes(folder: Path = SHM) -> dict[str, list[Path]]:
    """This user's streaming prefixes in `folder` and their files."""
    prefixes: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        match = STREAMING_FILE.fullmatch(path.name)
        if match and _mine(path):
            prefixes.setdefault(match.group(1), []).append(path)
    return prefixes


def _locals_file(folder: Path, prefix: str) -> str | None:
    """The identity of the prefix's _locals file, as an owner record holds it."""
    try:
        stat = (folder / f"{prefix}_locals").stat()
    except FileNotFoundError:
        return None
    return f"{stat.st_ino}x{stat.st_ctime_ns}"


@contextlib.contextmanager
def registered_here(folder: Path = SHM):
    """Records this process as the owner of every prefix that appears while inside: call it around
    creating datasets, under `node_lock` (held here or by the node's first rank), so the prefixes
    that appear are ours."""
    before = set(streaming_prefixes(folder)) if folder.is_dir() else set()
    yield
    if not folder.is_dir():
        return
    pid = os.getpid()
    for prefix in set(streaming_prefixes(folder)) - before:
        identity = _locals_file(folder, prefix)
        if identity is not None:
            (folder / f"backpack-dist-owner.{prefix}.{pid}.{_start_time(pid)}.{identity}").touch()


def files_in_use(folder: Path = SHM) -> set[str]:
    """Names of the files in `folder` that some process (of those this user may inspect) has open
    or mapped. Another user's processes cannot open this user's streaming files (mode 0600)."""
    in_use = set()
    prefix = f"{folder}/"

    def note(path: str) -> None:
        # A file removed since it was opened shows as "NAME (deleted)": prefixes are reused, so
        # that old file says nothing about the one of the same name there now.
        if not path.endswith(" (deleted)"):
            in_use.add(path)

    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    at = line.find(prefix)
                    if at >= 0:
                        note(line[at + len(prefix):].rstrip("\n"))
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(prefix):
                    note(target[len(prefix):])
        except OSError:  # the process ended, or is not ours to read
            continue
    return in_use


def _owner_records(folder: Path) -> list[tuple[Path, re.Match]]:
    return [(path, match) for path in folder.iterdir()
            if (match := OWNER_RECORD.fullmatch(path.name)) and _mine(path)]


def remove_stale(folder: Path = SHM) -> list[str]:
    """Remove this user's streaming prefixes whose owners are gone (see the module's note); the
    prefixes removed. Owner records of prefixes no longer there, or since re-registered, go too."""
    if not folder.is_dir():
        return []
    prefixes = streaming_prefixes(folder)
    records: dict[str, list[tuple[Path, re.Match]]] = {}
    for path, match in _owner_records(folder):
        prefix = match.group(1)
        if prefix in prefixes and match.group(4) == _locals_file(folder, prefix):
            records.setdefault(prefix, []).append((path, match))
        else:
            path.unlink(missing_ok=True)  # outdated: the prefix closed cleanly, maybe taken again
    in_use = files_in_use(folder) if len(records) < len(prefixes) else set()

    def stale(prefix: str) -> bool:
        if prefix in records:
            return not any(str(_start_time(int(m.group(2)))) == m.group(3) for _, m in records[prefix])
        return not any(f.name in in_use for f in prefixes[prefix])

    removed = sorted(filter(stale, prefixes))
    for prefix in removed:
        for path in prefixes[prefix] + [path for path, _ in records.get(prefix, [])]:
            path.unlink(missing_ok=True)
    return removed
