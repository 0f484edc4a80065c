"""Locating OpenWebText: local copies given with --input, or the Hugging Face dataset, whose
prepared Arrow cache files are then read like any other arrow input."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

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


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """The Hub's host when a TCP connection to it fails (offline), else None. Offline, the hub
    client retries every request for about 24 s, printing a warning each time, before it fails."""
    if os.environ.get("HF_HUB_OFFLINE") or any(os.environ.get(v) for v in
                                                ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # already offline, or a proxy that only the hub client knows how to use
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    try:
        socket.create_connection((host, url.port or (80 if url.scheme == "http" else 443)), timeout=timeout).close()
        return None
    except OSError:
        return host


def hf_arrow_files(dataset: str = HF_DATASET, revision: str | None = None) -> list[str]:
    """Download (once, into the HF cache) and return the dataset's Arrow files, in order."""
    unreachable = _hub_unreachable()
    if unreachable:  # use the HF cache only, without the retries
        os.environ["HF_HUB_OFFLINE"] = "1"
        if "huggingface_hub" in sys.modules:  # (streaming imports it) it reads the variable once, on import
            sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    try:
        ds = _load(dataset, revision)
    except Exception as e:  # offline, a missing dataset and a broken cache all surface differently
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        offline = f"{unreachable} is unreachable and the HF cache does not hold it; " if unreachable else ""
        raise PrepError(
            f"cannot load the Hugging Face dataset {dataset!r} ({type(e).__name__}: {first_line[:200]}); "
            f"{offline}without internet pass --input with local copies (parquet/arrow/jsonl files or folders)"
        ) from None
    files = [f["filename"] for f in ds.cache_files]
    if not files:
        raise PrepError(f"the Hugging Face dataset {dataset!r} has no Arrow cache files; pass --input instead")
    return files
