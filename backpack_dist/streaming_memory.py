"""mosaicml-streaming's shared memory left behind by killed processes.

Each StreamingDataset registers under a numbered prefix in /dev/shm (000123_locals, _barrier,
...) and removes those files when it is closed; a process killed by SIGKILL (the OOM killer, a
SLURM job past its grace period) leaves them. Every later dataset on the node then opens, and
keeps open, the files of each leftover prefix, so after enough kills a trainer runs out of file
descriptors. streaming's own clean_stale_shared_memory removes every prefix, a live job's too,
and stops at the first gap in the numbering; this removes the prefixes that no process has open
or mapped, and only this user's. "No process" means none that /proc shows: a job in another PID
namespace sharing this /dev/shm (a container run with --ipc=host) would look dead, so such setups
need their own /dev/shm per container (the default)."""

from __future__ import annotations

import os
import re
from pathlib import Path

SHM = Path("/dev/shm")
STREAMING_FILE = re.compile(r"(\d{6})_(locals|barrier|next_epoch|cache_usage|shard_states|shard_access_times|resume|"
                            r"epoch_shape|epoch_data)")


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


def remove_stale(folder: Path = SHM) -> list[str]:
    """Remove this user's streaming prefixes none of whose files is in use; the prefixes removed."""
    if not folder.is_dir():
        return []
    prefixes: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        match = STREAMING_FILE.fullmatch(path.name)
        if match:
            try:
                if path.stat().st_uid == os.getuid():
                    prefixes.setdefault(match.group(1), []).append(path)
            except FileNotFoundError:
                continue
    if not prefixes:
        return []
    in_use = files_in_use(folder)
    stale = sorted(p for p, files in prefixes.items() if not any(f.name in in_use for f in files))
    for prefix in stale:
        for path in prefixes[prefix]:
            path.unlink(missing_ok=True)
    return stale
