"""Writing a file so that readers see the old version or the whole new one, never a torn one:
write a temporary file beside it, flush it to disk, then rename it over the target. And writing
an output folder the same way, replacing only an earlier output of the same kind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path) -> Iterator[Path]:
    """A temporary path beside `path` to write; when the block ends without an error it is
    fsynced and renamed onto `path` (its mode following the umask, as a plain open() would),
    otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path, data, **dump_options) -> None:
    """data as JSON (NaN refused: it is not JSON), ending with a newline."""
    write_text(path, json.dumps(data, allow_nan=False, **dump_options) + "\n")


def check_replaceable(out, kind: str, is_ours: Callable[[Path, set[str]], bool]) -> Path:
    """`out` as an absolute path, when a folder written there may replace what is there: nothing,
    an empty folder, or an earlier `kind` (is_ours(folder, its entries)); never a run, a data
    folder or a user's files. ValueError naming the flag's value and the fix otherwise."""
    from .cli import nearest_existing

    out = Path(out).absolute()
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ValueError(f"--out {out} is a file; pass a new folder")
        entries = {p.name for p in out.iterdir()}
        if entries and not is_ours(out, entries):
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise ValueError(f"--out {out} exists and is not an earlier {kind} (it holds {shown}); pass a new folder")
    parent = nearest_existing(out.parent)
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    return out


@contextlib.contextmanager
def replacing_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` to fill; when the block ends without an error its files
    get the umask's modes (a folder written for the whole team) and it takes `out`'s place,
    otherwise it is removed and `out` is left as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        mask = current_umask()
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private
        for path in tmp.iterdir():
            os.chmod(path, 0o666 & ~mask)  # safetensors writes 0600
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
