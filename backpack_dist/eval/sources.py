"""Where evaluation data comes from (a local file or the Hugging Face hub) and how results record
it: the path or hub id, a sha256 of each local file, and a sha256 of the examples actually
scored (after --limit), so two result files can be checked to have used the same data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_sha256(examples) -> str:
    h = hashlib.sha256()
    for example in examples:
        h.update(json.dumps(example, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def local_record(paths, examples) -> dict:
    paths = [Path(p) for p in paths]
    return {"source": "local", "files": {str(p.resolve()): sha256_file(p) for p in paths},
            "examples": len(examples), "content_sha256": content_sha256(examples)}


def hub_record(name: str, config: str | None, split: str, examples) -> dict:
    return {"source": "hf", "dataset": name, "config": config, "split": split,
            "examples": len(examples), "content_sha256": content_sha256(examples)}


def load_hub(name: str, config: str | None, split: str, local_flag: str):
    """A Hugging Face dataset split, or a clear error saying which local flag to use offline."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline and hub errors come in many types
        raise ValueError(f"cannot load {name} ({config or 'default'}, {split}) from the Hugging Face hub "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         f"offline, pass {local_flag}") from None


def take(items, limit: int | None):
    """The first `limit` items (all when limit is None)."""
    items = list(items)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be a positive number of examples, got {limit}")
        items = items[:limit]
    return items


def check_file(path, what: str, fix: str) -> Path:
    """`path` as a Path when it is a file; ValueError saying what is wrong and `fix` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file ({fix})")
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist ({fix})")
    return path


def read_text(path) -> str:
    """A whole UTF-8 text file; ValueError naming the file and the first bad byte otherwise."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}, line {line}: {e.reason}); "
                         "pass the original UTF-8 file") from None


def read_jsonl_objects(path, is_valid, format_error: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a jsonl file; ValueError naming the line
    and `format_error` (what the file should hold) when a line is not JSON or fails is_valid."""
    rows = []
    for n, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not is_valid(row):
            raise ValueError(f"{path} line {n} {format_error}")
        rows.append((n, row))
    return rows
