"""Reading documents from local corpora, and cutting the input into pieces for parallel jobs.

Formats (chosen by file suffix):
  * ``.jsonl``/``.ndjson``/``.json``: one JSON object per line, the document in ``text_field``;
  * ``.parquet`` and ``.arrow`` (HF ``save_to_disk``/cache files): the ``text_field`` column;
  * anything else is plain UTF-8 text: documents are separated by blank lines (lines holding only
    ASCII whitespace), or the whole file is one document with ``one_doc_per_file``.

A piece is a slice of one file: a byte range (jsonl, text), a row-group range (parquet) or a
row range (arrow). Byte ranges are nominal: a reader snaps both ends forward to the next
document start with the same rule, so neighbouring pieces never share or drop a document and
the plan only needs file sizes, never a scan of the data.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import PrepError

JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
# Files picked up when a directory is given (an HF save_to_disk folder also holds .json metadata).
DIRECTORY_SUFFIXES = {".jsonl", ".ndjson", ".parquet", ".arrow", ".txt", ".text", ".raw"}
ASCII_WHITESPACE = b" \t\n\r\x0b\x0c"


@dataclass(frozen=True)
class Piece:
    path: str  # absolute
    kind: str  # jsonl | text | text_file | parquet | arrow
    start: int
    stop: int
    size: int  # estimated bytes, for balancing parts


def file_kind(path: str, one_doc_per_file: bool) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in (".parquet", ".arrow"):
        return suffix[1:]
    return "text_file" if one_doc_per_file else "text"


def _flatten(inputs) -> list[str]:
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    if not isinstance(inputs, (list, tuple)):  # fire turns `--input 2024` into an int
        return [str(inputs)]
    out = []
    for item in inputs:
        out.extend(_flatten(item))
    return out


def expand_inputs(inputs) -> list[str]:
    """Files (absolute, in the order given; directories recursively, sorted; globs sorted)."""
    if inputs is None or inputs == [] or inputs == ():
        raise PrepError("no input given: pass --input PATH (a file, a folder, a quoted glob or a comma-separated list)")
    files: list[str] = []
    for raw in _flatten(inputs):
        item = str(raw)
        if os.path.isdir(item):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(item)
                for name in names
                if Path(name).suffix.lower() in DIRECTORY_SUFFIXES and not name.startswith(".")
            )
            if not found:
                raise PrepError(f"input directory {item} holds no {'/'.join(sorted(DIRECTORY_SUFFIXES))} files")
            files.extend(found)
        elif os.path.exists(item):
            files.append(item)
        elif any(ch in item for ch in "*?["):
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                raise PrepError(f"input pattern {item!r} matches no file")
            files.extend(found)
        elif "," in item:  # fire passes `--input a,b` through as one string when it cannot parse it
            files.extend(expand_inputs(item.split(",")))
        else:
            raise PrepError(f"input {item!r} does not exist")
    files = [os.path.abspath(f) for f in files]
    duplicates = [f for f, n in Counter(files).items() if n > 1]
    if duplicates:
        raise PrepError(f"input {duplicates[0]} is given twice; each file may appear once")
    return files


# Compressed files read as text would be tokenized as binary garbage.
MAGIC = [
    (b"\x1f\x8b", "gzip", "gunzip -k"),
    (b"\x28\xb5\x2f\xfd", "zstd", "zstd -d"),
    (b"\xfd7zXZ\x00", "xz", "unxz -k"),
    (b"PK\x03\x04", "zip", "unzip"),
    (b"PK\x05\x06", "zip", "unzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z", "7z x"),
]
BZIP2 = re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)")  # "BZh", level, then a block or end-of-stream magic
HEAD_BYTES = 1 << 16  # sampled for magic bytes and NULs
JSONL_PROBE_LINES = 20  # first non-blank lines of a jsonl file checked for objects with the text field
JSONL_PROBE_BYTES = 1 << 20


def _check_head(path: str, kind: str, text_field: str) -> None:
    """Refuse, before anything is written, text and jsonl files that cannot be what they claim:
    compressed or binary files, and jsonl whose first lines are no objects or lack the text field."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            if kind == "jsonl":
                f.seek(0)
                lines, read = [], 0
                while len(lines) < JSONL_PROBE_LINES and read < JSONL_PROBE_BYTES:
                    line = f.readline(JSONL_PROBE_BYTES)
                    read += len(line)
                    if not line or not line.endswith(b"\n") and len(line) == JSONL_PROBE_BYTES:
                        break  # end of file, or a line too long to sample
                    if not _is_blank(line):
                        lines.append(line)
    except OSError as e:
        raise PrepError(f"cannot read input {path}: {e.strerror or e}; fix its permissions or leave it out") from None
    for magic, name, command in MAGIC:
        if head.startswith(magic):
            raise PrepError(f"input {path} is {name}-compressed; decompress it first (`{command} {path}`) "
                            "and pass the decompressed file")
    if BZIP2.match(head):
        raise PrepError(f"input {path} is bzip2-compressed; decompress it first (`bunzip2 -k {path}`) "
                        "and pass the decompressed file")
    if b"\x00" in head:
        raise PrepError(f"input {path} is binary (NUL bytes near its start), not UTF-8 "
                        "text; decompress or convert it to UTF-8 text, jsonl, parquet or arrow first")
    if kind == "jsonl" and lines:
        objects = []
        for line in lines:
            try:
                obj = json.loads(line.decode("utf-8", errors="replace"))  # bad bytes are repaired later
            except ValueError:
                continue
            if isinstance(obj, dict):
                objects.append(obj)
        if not objects:
            raise PrepError(f"jsonl file {path} does not hold one JSON object per line (its first {len(lines)} "
                            "lines are not objects: a JSON array or pretty-printed JSON?); rewrite it as JSON "
                            f"Lines, e.g. `jq -c '.[]' {path} > out.jsonl`")
        if not any(text_field in obj for obj in objects):
            keys = sorted({k for obj in objects for k in obj})
            shown = ", ".join(map(repr, keys[:10])) + (" ..." if len(keys) > 10 else "")
            raise PrepError(f"jsonl file {path} has no field {text_field!r} in its first {len(objects)} objects "
                            f"(keys: {shown}); pass --text_field")


def _arrow_table(path: str):
    import pyarrow as pa

    source = pa.memory_map(path)
    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(pa.memory_map(path)).read_all()


def _split_evenly(total: int, size: int, part_bytes: int) -> list[tuple[int, int]]:
    n = max(1, -(-size // part_bytes))
    n = min(n, max(total, 1))
    return [(k * total // n, (k + 1) * total // n) for k in range(n)]


def pieces_of_file(path: str, kind: str, text_field: str, part_bytes: int) -> list[Piece]:
    if kind not in ("parquet", "arrow"):  # those are checked by their readers below
        _check_head(path, kind, text_field)
    size = os.path.getsize(path)
    if kind in ("jsonl", "text"):
        return [Piece(path, kind, a, b, b - a) for a, b in _split_evenly(size, size, part_bytes)]
    if kind == "text_file":
        return [Piece(path, kind, 0, size, size)]
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as e:
            raise PrepError(f"cannot read parquet file {path}: {e}") from None
        names = meta.schema.names
        if text_field not in names:
            raise PrepError(f"parquet file {path} has no column {text_field!r} (columns: {names}); pass --text_field")
        pieces, first, acc = [], 0, 0
        for g in range(meta.num_row_groups):
            acc += meta.row_group(g).total_byte_size
            if acc >= part_bytes or g == meta.num_row_groups - 1:
                pieces.append(Piece(path, kind, first, g + 1, acc))
                first, acc = g + 1, 0
        return pieces
    if kind == "arrow":
        try:
            table = _arrow_table(path)
        except Exception as e:
            raise PrepError(f"cannot read arrow file {path}: {e}") from None
        if text_field not in table.column_names:
            raise PrepError(
                f"arrow file {path} has no column {text_field!r} (columns: {table.column_names}); pass --text_field"
            )
        rows = table.num_rows
        ranges = _split_evenly(rows, size, part_bytes)
        return [Piece(path, kind, a, b, (b - a) * size // max(rows, 1)) for a, b in ranges]
    raise AssertionError(kind)


def plan_parts(files: list[str], *, one_doc_per_file: bool, text_field: str, part_bytes: int) -> list[list[Piece]]:
    """Group the files' pieces, in input order, into parts of about part_bytes each. The plan
    depends only on the inputs and settings, so every job of an array computes the same one."""
    parts: list[list[Piece]] = []
    current: list[Piece] = []
    current_size = 0
    for path in files:
        for piece in pieces_of_file(path, file_kind(path, one_doc_per_file), text_field, part_bytes):
            if current and current_size + piece.size > part_bytes:
                parts.append(current)
                current, current_size = [], 0
            current.append(piece)
            current_size += piece.size
    if current:
        parts.append(current)
    return parts


def piece_to_json(piece: Piece) -> dict:
    return asdict(piece)


def piece_from_json(obj: dict) -> Piece:
    return Piece(**obj)


# ---------------------------------------------------------------- reading


def _line_start_at_or_after(f, pos: int) -> int:
    if pos == 0:
        return 0
    f.seek(pos - 1)
    f.readline()  # consumes up to and including the first newline at or after pos - 1
    return f.tell()


def _is_blank(line: bytes) -> bool:
    return not line.strip(ASCII_WHITESPACE)


def _paragraph_start_at_or_after(f, pos: int) -> int:
    """The first non-blank line that follows a blank line starting at or after pos."""
    if pos == 0:
        return 0
    offset = _line_start_at_or_after(f, pos)
    seen_blank = False
    while True:
        line = f.readline()
        if not line:
            return f.tell()
        if _is_blank(line):
            seen_blank = True
        elif seen_blank:
            return offset
        offset += len(line)


def _read_range(path: str, piece: Piece, snap) -> bytes:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        begin = snap(f, piece.start)
        end = size if piece.stop >= size else snap(f, piece.stop)
        f.seek(begin)
        return f.read(max(0, end - begin))


def _decode(data: bytes, stats: Counter) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        stats["invalid_utf8_repaired"] += 1
        return data.decode("utf-8", errors="replace")


def _paragraphs(data: bytes) -> Iterator[bytes]:
    lines: list[bytes] = []
    for line in data.split(b"\n"):
        if _is_blank(line):
            if lines:
                yield b"\n".join(lines)
                lines = []
        else:
            lines.append(line)
    if lines:
        yield b"\n".join(lines)


def _jsonl_texts(data: bytes, text_field: str, stats: Counter) -> Iterator[object]:
    for line in data.split(b"\n"):
        if _is_blank(line):
            continue
        try:
            obj = json.loads(line)
        except UnicodeDecodeError:
            try:
                obj = json.loads(line.decode("utf-8", errors="replace"))
            except ValueError:
                stats["invalid_json"] += 1
                continue
            stats["invalid_utf8_repaired"] += 1
        except ValueError:
            stats["invalid_json"] += 1
            continue
        yield obj.get(text_field) if isinstance(obj, dict) else None


def _column_texts(piece: Piece, text_field: str) -> Iterator[object]:
    if piece.kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(piece.path)
        batches = pf.iter_batches(row_groups=range(piece.start, piece.stop), columns=[text_field], batch_size=8192)
        for batch in batches:
            yield from batch.column(0).to_pylist()
    else:
        column = _arrow_table(piece.path).column(text_field).slice(piece.start, piece.stop - piece.start)
        for chunk in column.chunks:
            yield from chunk.to_pylist()


def _raw_documents(piece: Piece, text_field: str, stats: Counter) -> Iterator[object]:
    if piece.kind == "text":
        for doc in _paragraphs(_read_range(piece.path, piece, _paragraph_start_at_or_after)):
            yield _decode(doc, stats)
    elif piece.kind == "jsonl":
        yield from _jsonl_texts(_read_range(piece.path, piece, _line_start_at_or_after), text_field, stats)
    elif piece.kind == "text_file":
        with open(piece.path, "rb") as f:
            yield _decode(f.read(), stats)
    else:
        yield from _column_texts(piece, text_field)


def utf8_bytes(text: str, stats: Counter) -> tuple[str, bytes]:
    """(text, its UTF-8 bytes); lone surrogates (from JSON escapes such as "\\ud800") become U+FFFD."""
    try:
        return text, text.encode("utf-8")
    except UnicodeEncodeError:
        stats["invalid_utf8_repaired"] += 1
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return text, text.encode("utf-8")


def iter_documents(pieces: Iterable[Piece], text_field: str, stats: Counter) -> Iterator[str]:
    """The non-empty documents of the pieces, in order. Skipped and repaired documents are
    counted in stats (keys: empty, missing_text, invalid_json, invalid_utf8_repaired). Text may
    still hold lone surrogates: pass it through utf8_bytes."""
    for piece in pieces:
        try:
            for text in _raw_documents(piece, text_field, stats):
                if isinstance(text, bytes):
                    text = _decode(text, stats)
                if not isinstance(text, str):
                    stats["missing_text"] += 1
                    continue
                if not text or text.isspace():
                    stats["empty"] += 1
                    continue
                yield text
        except PrepError:
            raise
        except (OSError, ValueError) as e:  # an I/O error, or a parquet/arrow file corrupt past its header
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise PrepError(f"cannot read input {piece.path}: {first_line}; fix or replace the file and rerun "
                            "(committed parts are kept)") from None


PROBE_BYTES = 1 << 20
PROBE_ROWS = 1000


def _probe_windows(piece: Piece) -> Iterator[Piece]:
    """The piece in small consecutive slices (same documents: byte ranges snap the same way), so
    that looking for a first document reads about a megabyte, not a whole part."""
    step = {"jsonl": PROBE_BYTES, "text": PROBE_BYTES, "parquet": 1, "arrow": PROBE_ROWS}.get(piece.kind)
    if step is None or piece.stop - piece.start <= step:
        yield piece
        return
    for a in range(piece.start, piece.stop, step):
        b = min(a + step, piece.stop)
        yield Piece(piece.path, piece.kind, a, b, b - a)


def check_has_documents(parts: list[list[Piece]], text_field: str) -> None:
    """Refuse an input that yields no document at all (empty files, only blank or broken lines,
    no text field). Reads until the first document: a megabyte for any usable input."""
    stats: Counter = Counter()
    files = []
    for part in parts:
        for piece in part:
            if piece.path not in files:
                files.append(piece.path)
            for window in _probe_windows(piece):
                for _ in iter_documents([window], text_field, stats):
                    return
    counts = ", ".join(f"{k} {stats[k]}" for k in ("empty", "missing_text", "invalid_json") if stats[k])
    where = files[0] if len(files) == 1 else f"{len(files)} files"
    raise PrepError(f"no documents in the input: {where} ({counts or 'no text at all'}); check --input, "
                    f"--text_field ({text_field!r}) and the files' contents")
