"""Writing a file so that readers see the old version or the whole new one, never a torn one:
write a temporary file beside it, flush it to disk, then rename it over the target."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
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
