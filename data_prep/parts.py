"""Writing parts: one part = a slice of the input tokenized into its own MDS folders
(OUT/train/part-NNNNN and OUT/val/part-NNNNN) plus a manifest OUT/parts/part-NNNNN.json.

A part is built in OUT/.tmp/part-NNNNN, moved into place, and committed by writing its manifest
last (atomically), so a killed job leaves either a committed part or one that the next run redoes.
OUT/prep.json holds the settings and the plan; a job with different settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backpack_dist import atomic
from backpack_dist.cli import nearest_existing

from .errors import PrepError
from .packing import DocumentTokenizer, SamplePacker, is_validation
from .sources import Piece, piece_from_json, piece_to_json

FORMAT = "backpack-dist data_prep v1"
SPLITS = ("train", "val")
COLUMNS = {"tokens": "ndarray:uint16"}
SHARD_SIZE_LIMIT = 1 << 26
SKIP_KEYS = ("empty", "missing_text", "invalid_json")
# The skips that --max_skipped limits: a wrong --text_field or a wrong file shows as these, while
# empty documents are normal in many corpora.
UNUSABLE_KEYS = ("missing_text", "invalid_json")
REPAIR_KEYS = ("invalid_utf8_repaired", "long_doc_sliced")


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def write_json_atomic(path: Path, obj) -> None:
    atomic.write_json(path, obj, indent=1, sort_keys=True)


def settings_id(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def part_keys(settings: dict) -> list[str]:
    """Each part's key: the settings that shape every part, the part's pieces, and the size and
    mtime of the files it reads. A manifest commits its part only while the key is unchanged, so a
    changed input file invalidates the parts that read it and no others."""
    common = settings_id({k: v for k, v in settings.items() if k not in ("inputs", "parts")})
    stats = {i["path"]: [i["size"], i["mtime_ns"]] for i in settings.get("inputs", [])}
    keys = []
    for pieces in settings.get("parts", []):
        files = sorted({p["path"] for p in pieces})
        blob = json.dumps([common, pieces, [stats.get(f) for f in files]], sort_keys=True)
        keys.append(hashlib.sha256(blob.encode()).hexdigest()[:16])
    return keys


def part_key(settings: dict, index: int) -> str:
    return part_keys({**settings, "parts": [settings["parts"][index]]})[0]


def _read_record(path: Path) -> dict:
    """prep.json's {"settings_id", "settings"}; PrepError when it is not one."""
    try:
        record = json.loads(path.read_text())
        if isinstance(record, dict) and isinstance(record.get("settings"), dict) and "settings_id" in record:
            settings = record["settings"]
            if isinstance(settings.get("parts"), list) and isinstance(settings.get("inputs"), list):
                return record
        problem = "it is not a data_prep settings record"
    except ValueError as e:
        problem = f"not valid JSON: {e}"
    except OSError as e:
        problem = e.strerror or str(e)
    raise PrepError(f"{path} is corrupt ({problem}); rerun the prep job with --overwrite to rewrite it "
                    "(committed parts with the same settings are kept)")


def read_prep(out_dir: Path) -> dict:
    path = Path(out_dir) / "prep.json"
    if not path.is_file():
        raise PrepError(f"{out_dir} is not a data_prep output (no prep.json); run `python -m data_prep text ...` first")
    return _read_record(path)


def check_out_dir(out_dir: Path) -> None:
    """--out_dir must be a folder or a path that can become one (not a file, nor under a file)."""
    p = nearest_existing(out_dir)
    if not p.is_dir():
        what = "is a file" if p == out_dir.absolute() else f"is under {p}, which is a file"
        raise PrepError(f"--out_dir {out_dir} {what}; pass a folder path")


def claim_output(out_dir: Path, settings: dict, overwrite: bool) -> None:
    """Record the settings in OUT/prep.json, or check that they equal the recorded ones. Safe when
    the jobs of an array start at the same moment: the file is created with a hard link.

    A rerun whose inputs have the same paths but other sizes or mtimes (a broken file replaced)
    proceeds when no committed part reads a changed file; otherwise, and for any other change,
    it needs --overwrite, which keeps the committed parts whose key is unchanged."""
    check_out_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepError(f"cannot create --out_dir {out_dir}: {e.strerror or e}; pass a folder you can write") from None
    path = out_dir / "prep.json"
    record = {"settings_id": settings_id(settings), "settings": settings}
    # Refuse a folder with foreign content. Our own names may appear at any moment: the other
    # jobs of an array are claiming the same folder concurrently.
    ours = {"prep.json", "parts", "train", "val", "dataset.json"}
    foreign = [p.name for p in out_dir.iterdir() if p.name not in ours and not p.name.startswith(".")]
    if foreign and not path.exists() and not overwrite:
        raise PrepError(f"{out_dir} is not empty and not a data_prep output; use another --out_dir or --overwrite")
    tmp = out_dir / f".prep.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    try:
        os.link(tmp, path)
        tmp.unlink()
        return
    except FileExistsError:
        pass
    try:
        old = _read_record(path)["settings"]
    except PrepError:
        if not overwrite:
            tmp.unlink()
            raise
        old = {}
    if settings_id(old) == record["settings_id"]:
        tmp.unlink()
        return
    changed = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
    old_paths = [i["path"] for i in old.get("inputs", [])]
    only_file_stats = set(changed) <= {"inputs", "parts"} and old_paths == [i["path"] for i in settings["inputs"]]
    if not overwrite:
        if not only_file_stats:
            tmp.unlink()
            raise PrepError(
                f"{out_dir} was written with different settings (changed: {', '.join(changed)}); "
                "use another --out_dir, or pass --overwrite to rebuild it (unchanged parts are kept)"
            )
        old_keys, new_keys, old_sid = part_keys(old), part_keys(settings), settings_id(old)
        lost = [i for i, key in enumerate(old_keys) if (i >= len(new_keys) or new_keys[i] != key)
                and committed_manifest(out_dir, i, key, old_sid) is not None]
        if lost:
            tmp.unlink()
            files = [a["path"] for a, b in zip(old["inputs"], settings["inputs"], strict=True) if a != b]
            names = ", ".join(part_name(i) for i in lost[:5]) + (" ..." if len(lost) > 5 else "")
            raise PrepError(
                f"input {', '.join(files[:3])}{' ...' if len(files) > 3 else ''} changed (size or mtime) since "
                f"committed parts read it ({names}); pass --overwrite to redo the parts that read changed "
                "files (the others are kept), or use another --out_dir"
            )
    # The merged view no longer matches: remove it before the new settings become visible.
    for stale in (out_dir / "dataset.json", out_dir / "train" / "index.json", out_dir / "val" / "index.json"):
        stale.unlink(missing_ok=True)
    os.replace(tmp, path)  # parts whose key changed are no longer committed and get redone
    remove_parts_beyond(out_dir, len(settings["parts"]))


def remove_parts_beyond(out_dir: Path, n_parts: int) -> None:
    """Remove parts with index >= n_parts, left by settings with more parts: no job with the
    current settings writes them, so this is safe while other jobs run."""
    found = (re.fullmatch(r"part-(\d+)(\.json)?", p.name) for d in ("parts", "train", "val", ".tmp")
             for p in (out_dir / d).glob("part-*"))
    indexes = {int(m.group(1)) for m in found if m}
    for index in sorted(i for i in indexes if i >= n_parts):
        manifest_path(out_dir, index).unlink(missing_ok=True)  # the commit marker goes first
        for d in ("train", "val", ".tmp"):
            shutil.rmtree(out_dir / d / part_name(index), ignore_errors=True)


def manifest_path(out_dir: Path, index: int) -> Path:
    return out_dir / "parts" / f"{part_name(index)}.json"


def committed_manifest(out_dir: Path, index: int, key: str, sid: str | None = None) -> dict | None:
    """The part's manifest when the part is committed with this key (see part_keys), else None.
    A manifest from before part keys counts while the whole settings are the same (sid)."""
    path = manifest_path(out_dir, index)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if "part_key" in manifest:
        committed = manifest["part_key"] == key
    else:  # written before part keys existed
        committed = sid is not None and manifest.get("settings_id") == sid
    if not committed:
        return None
    if not all((out_dir / split / part_name(index) / "index.json").is_file() for split in SPLITS):
        return None
    return manifest


def count_committed(out_dir: Path, settings: dict) -> int:
    sid = settings_id(settings)
    return sum(committed_manifest(out_dir, i, key, sid) is not None for i, key in enumerate(part_keys(settings)))


class TokenSampleEncoder:
    """MDS bytes of one `tokens` sample. MDSWriter takes pre-encoded bytes as a column value; the
    library's own ndarray coder gives the header for full-length samples once (a dtype byte and the
    shape), so each sample costs one tobytes() instead of the coder's per-call checks."""

    def __init__(self, seq_len: int):
        from streaming.base.format.mds.encodings import mds_encode

        self.mds_encode = mds_encode
        self.full_length = seq_len + 1
        probe = np.zeros(self.full_length, dtype=np.uint16)
        self.full_header = mds_encode(COLUMNS["tokens"], probe)[: -probe.nbytes]

    def __call__(self, tokens: np.ndarray) -> bytes:
        if len(tokens) == self.full_length:
            return self.full_header + tokens.tobytes()
        return self.mds_encode(COLUMNS["tokens"], tokens)


def build_part(out_dir: Path, settings: dict, index: int, report: Callable[[int, int], None]) -> dict:
    """Tokenize one part and commit it. report(documents, tokens) is called every so often."""
    from streaming import MDSWriter  # imported here: it is slow to import and only workers need it

    from .sources import iter_documents, utf8_bytes

    name = part_name(index)
    pieces: list[Piece] = [piece_from_json(p) for p in settings["parts"][index]]
    tmp = out_dir / ".tmp" / name
    shutil.rmtree(tmp, ignore_errors=True)  # a partial attempt of this part
    tmp.mkdir(parents=True)
    started = time.time()

    tokenize = DocumentTokenizer(settings["tokenizer"], settings["max_doc_chars"])
    compression = None if settings["compression"] == "none" else settings["compression"]
    writers = {s: MDSWriter(out=str(tmp / s), columns=COLUMNS, compression=compression,
                            size_limit=SHARD_SIZE_LIMIT) for s in SPLITS}
    encode = TokenSampleEncoder(settings["seq_len"])
    packers = {s: SamplePacker(settings["seq_len"], lambda a, w=writers[s]: w.write({"tokens": encode(a)}))
               for s in SPLITS}
    stats: Counter = Counter()
    seed, val_fraction = settings["seed"], settings["val_fraction"]
    reported_docs = reported_tokens = 0
    last_report = time.time()
    docs = tokens = 0
    for text in iter_documents(pieces, settings["text_field"], stats):
        text, data = utf8_bytes(text, stats)
        ids, sliced = tokenize(text)
        if sliced:
            stats["long_doc_sliced"] += 1
        packers["val" if is_validation(data, seed, val_fraction) else "train"].add(ids)
        docs += 1
        tokens += len(ids)
        if docs % 256 == 0 and time.time() - last_report > 0.5:
            report(docs - reported_docs, tokens - reported_tokens)
            reported_docs, reported_tokens, last_report = docs, tokens, time.time()
    for s in SPLITS:
        packers[s].finish()
        writers[s].finish()
    report(docs - reported_docs, tokens - reported_tokens)

    # Commit: move the folders into place, then write the manifest (the commit marker).
    for s in SPLITS:
        final = out_dir / s / name
        shutil.rmtree(final, ignore_errors=True)  # left by an attempt killed between moves
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp / s, final)
    manifest = {
        "part": index,
        "settings_id": settings_id(settings),
        "part_key": part_key(settings, index),
        "pieces": [piece_to_json(p) for p in pieces],
        "tokenizer": settings["tokenizer"],
        "tokenizer_fingerprint": settings["tokenizer_fingerprint"],
        "splits": {
            s: {"documents": packers[s].documents, "tokens": packers[s].tokens, "samples": packers[s].samples}
            for s in SPLITS
        },
        "skipped": {k: stats[k] for k in SKIP_KEYS},
        "repaired": {k: stats[k] for k in REPAIR_KEYS},
        "seconds": round(time.time() - started, 3),
    }
    (out_dir / "parts").mkdir(exist_ok=True)
    write_json_atomic(manifest_path(out_dir, index), manifest)
    shutil.rmtree(tmp, ignore_errors=True)
    return manifest
