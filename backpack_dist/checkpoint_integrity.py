"""Is a COMPLETE checkpoint still what was saved? COMPLETE records every file's size and xxh64
sum; a checkpoint is checked against them before it is resumed or read.

COMPLETE proves that the save finished; the sums prove the files were not truncated, flipped or
removed since (a disk error, a copy between clusters cut short, a quota the write did not see).
"""

from __future__ import annotations

import json
from pathlib import Path

import xxhash

COMPLETE = "COMPLETE"
DAMAGED_SUFFIX = ".damaged"
_CHUNK = 8 << 20


def file_sum(path: Path) -> str:
    h = xxhash.xxh64()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest(folder: Path) -> dict:
    """{relative path: {"size", "xxh64"}} of every file in a checkpoint folder but COMPLETE."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "xxh64": file_sum(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != COMPLETE}


def damage(folder: Path) -> str | None:
    """One line saying what is wrong with a COMPLETE checkpoint's files, or None when every file
    recorded in COMPLETE has its size and sum (also None for a checkpoint saved before sums were
    recorded: see has_sums)."""
    folder = Path(folder)
    files = json.loads((folder / COMPLETE).read_text()).get("files")
    for name, want in (files or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing (expected {want['size']} bytes)"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{path} is {size} bytes, expected {want['size']}"
        found = file_sum(path)
        if found != want["xxh64"]:
            return f"{path} has xxh64 {found}, expected {want['xxh64']} (same size: its contents changed)"
    return None


def has_sums(folder: Path) -> bool:
    return "files" in json.loads((Path(folder) / COMPLETE).read_text())


def set_aside(folder: Path) -> Path:
    """Renames a damaged checkpoint out of the way (never deletes evidence): step_N.damaged, or
    step_N.damaged.2, ... when that exists already."""
    folder = Path(folder)
    target, n = folder.with_name(folder.name + DAMAGED_SUFFIX), 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}{DAMAGED_SUFFIX}.{n}")
    folder.rename(target)
    return target
