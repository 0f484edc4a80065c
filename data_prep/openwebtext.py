"""Locating OpenWebText: local copies given with --input, or the Hugging Face dataset, whose
prepared Arrow cache files are then read like any other arrow input."""

from __future__ import annotations

from .errors import PrepError

HF_DATASET = "Skylion007/openwebtext"
# datasets >= 4 no longer runs loading scripts; the Hub's parquet conversion of a script dataset
# lives on this branch.
PARQUET_BRANCH = "refs/convert/parquet"


def _load(dataset: str, revision: str | None):
    from datasets import load_dataset

    try:
        return load_dataset(dataset, split="train", revision=revision)
    except RuntimeError as e:
        if revision is None and "scripts are no longer supported" in str(e):
            return load_dataset(dataset, split="train", revision=PARQUET_BRANCH)
        raise


def hf_arrow_files(dataset: str = HF_DATASET, revision: str | None = None) -> list[str]:
    """Download (once, into the HF cache) and return the dataset's Arrow files, in order."""
    try:
        ds = _load(dataset, revision)
    except Exception as e:  # offline, a missing dataset and a broken cache all surface differently
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise PrepError(
            f"cannot load the Hugging Face dataset {dataset!r} ({type(e).__name__}: {first_line[:200]}); "
            "without internet pass --input with local copies (parquet/arrow/jsonl files or folders)"
        ) from None
    files = [f["filename"] for f in ds.cache_files]
    if not files:
        raise PrepError(f"the Hugging Face dataset {dataset!r} has no Arrow cache files; pass --input instead")
    return files
