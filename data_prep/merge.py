"""Joining the committed parts into OUT/train/index.json and OUT/val/index.json (with
streaming's own merge_index) and writing OUT/dataset.json, the training loader's entry point.
A lone prep job calls merge itself; `python -m data_prep merge` runs it after an array of jobs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .errors import PrepError
from .options import MAX_SKIPPED
from .parts import (
    FORMAT,
    REPAIR_KEYS,
    SKIP_KEYS,
    SPLITS,
    UNUSABLE_KEYS,
    committed_manifest,
    part_keys,
    part_name,
    read_prep,
    write_json_atomic,
)

REQUIRED_KEYS = ("seq_len", "tokenizer", "tokenizer_fingerprint", "vocab_size", "eos_token_id", "splits")


def check_skipped(skipped: dict, documents: int, max_skipped: float, scope: str = "") -> str | None:
    """The one-line note on skipped input records (None when none was skipped), or a PrepError
    when more than max_skipped of the records are unusable (UNUSABLE_KEYS: almost always the
    wrong --text_field or the wrong file). A record is a jsonl line (blank lines aside), a text
    paragraph or a parquet/arrow row: each is a document or one skip."""
    records = documents + sum(skipped.values())
    if not any(skipped.values()):
        return None
    unusable = sum(skipped[k] for k in UNUSABLE_KEYS)
    reasons = ", ".join(f"{k} {n}" for k, n in skipped.items() if n)
    share = unusable / records
    if share > max_skipped:
        unusable_reasons = ", ".join(f"{k} {skipped[k]}" for k in UNUSABLE_KEYS if skipped[k])
        raise PrepError(
            f"{unusable} of {records} input records ({share:.1%}) are unusable ({unusable_reasons}), "
            f"over --max_skipped {max_skipped:g}; check the input, pass --text_field NAME if the text is under "
            "another key, or --max_skipped 1 to accept them (committed parts are kept: the rerun only merges)"
        )
    return f"data_prep: note: skipped {sum(skipped.values())} of {records} input records{scope} ({reasons})"


def merge(out_dir, max_skipped: float = MAX_SKIPPED) -> dict:
    """Merge all parts of OUT; refuses (naming the parts) when any part is not committed, and
    (see check_skipped) when more than max_skipped of the input records are unusable; nothing is
    published then. Prints a one-line note on stderr when any record was skipped."""
    out_dir = Path(out_dir).absolute()
    record = read_prep(out_dir)
    settings, sid = record["settings"], record["settings_id"]
    keys = part_keys(settings)
    n_parts = len(keys)
    manifests, missing = [], []
    for index in range(n_parts):
        manifest = committed_manifest(out_dir, index, keys[index], sid)
        (missing.append(index) if manifest is None else manifests.append(manifest))
    if missing:
        names = ", ".join(part_name(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise PrepError(
            f"{len(missing)} of {n_parts} parts of {out_dir} are not committed ({names}); rerun the prep jobs "
            "with the same settings (part p belongs to --shard_index p % --num_shards), then merge again"
        )
    skipped = {k: sum(m["skipped"][k] for m in manifests) for k in SKIP_KEYS}
    documents = sum(m["splits"][split]["documents"] for m in manifests for split in SPLITS)
    note = check_skipped(skipped, documents, max_skipped)  # before anything is replaced
    from streaming.base.util import merge_index  # slow to import: after the checks

    (out_dir / "dataset.json").unlink(missing_ok=True)
    for split in SPLITS:
        split_dir = out_dir / split
        (split_dir / "index.json").unlink(missing_ok=True)
        part_indexes = [str(split_dir / part_name(i) / "index.json") for i in range(n_parts)]
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # merge_index warns about its temp folder
        try:
            merge_index(part_indexes, str(split_dir))
        finally:
            logging.getLogger().setLevel(quiet)

    def total(split, key):
        return sum(m["splits"][split][key] for m in manifests)

    info = {
        "format": FORMAT,
        "seq_len": settings["seq_len"],
        "tokenizer": settings["tokenizer"],
        "tokenizer_fingerprint": settings["tokenizer_fingerprint"],
        "vocab_size": settings["vocab_size"],
        "eos_token_id": settings["eos_token_id"],
        "dtype": "uint16",
        "column": "tokens",
        "val_fraction": settings["val_fraction"],
        "seed": settings["seed"],
        "settings_id": sid,
        "num_parts": n_parts,
        "splits": {
            split: {
                "documents": total(split, "documents"),
                "tokens": total(split, "tokens"),
                "samples": total(split, "samples"),
                # samples per part, in index order: a part's last sample may be short
                "part_samples": [m["splits"][split]["samples"] for m in manifests],
            }
            for split in SPLITS
        },
        "skipped": skipped,
        "repaired": {k: sum(m["repaired"][k] for m in manifests) for k in REPAIR_KEYS},
        "inputs": [i["path"] for i in settings["inputs"]],
    }
    write_json_atomic(out_dir / "dataset.json", info)  # written last: its presence means "merged"
    if note:
        print(note, file=sys.stderr)
    return info


def read_dataset_info(out_dir, check_splits: bool = True) -> dict:
    """OUT/dataset.json of a merged data-prep output; ValueError (PrepError) otherwise.
    check_splits=False reads a lone copy of dataset.json (the splits are elsewhere, e.g. remote)."""
    out_dir = Path(out_dir)
    path = out_dir / "dataset.json"
    if not path.is_file():
        hint = (
            # a lone job merges itself, so this is an array's output or a job that was stopped
            f"once all its prep jobs have finished run `python -m data_prep merge --out_dir {out_dir}` "
            "(a one-job prep that was stopped: rerun it)"
            if (out_dir / "prep.json").is_file()
            else "prepare it with `python -m data_prep text|openwebtext --out_dir ...` (an array of "
            "--num_shards jobs then needs `python -m data_prep merge`)"
        )
        raise PrepError(f"{out_dir} is not a merged data-prep output (no dataset.json); {hint}")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise PrepError(f"{path} is not valid JSON ({e}); rerun `python -m data_prep merge`") from None
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing or info.get("format") != FORMAT:
        raise PrepError(f"{path} is not a data-prep dataset.json (missing {missing or 'format'}); rerun merge")
    for split in SPLITS if check_splits else ():
        if not (out_dir / split / "index.json").is_file():
            raise PrepError(f"{out_dir / split / 'index.json'} is missing; rerun `python -m data_prep merge`")
    return info
