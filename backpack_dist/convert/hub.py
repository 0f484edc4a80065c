"""SRC of from-hf: a local folder, or a Hugging Face Hub id fetched through huggingface_hub."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .weights import SAFETENSORS

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILES = ["*.json", "tokenizer.tiktoken"]


def resolve_source(src: str) -> tuple[Path, str | None]:
    """(local folder, the Hub id it came from or None)."""
    path = Path(src)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{src} is a file; pass the folder that holds config.json and the weights")
        return path, None
    if not HUB_ID.match(src):
        raise ValueError(f"{src} does not exist, and is not a Hub id such as stanfordnlp/backpack-gpt2")
    return _download(src), src


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        # safetensors when the repo has them, else the PyTorch pickle: never both, nor TF/Flax/ONNX files.
        folder = Path(snapshot_download(repo_id, allow_patterns=[*_FILES, "model*.safetensors"]))
        if not any((folder / name).is_file() for name in (SAFETENSORS, "model.safetensors.index.json")):
            folder = Path(snapshot_download(repo_id, allow_patterns=[*_FILES, "pytorch_model*.bin"]))
    except Exception as e:  # offline, unknown or gated repo, network errors: many types
        if isinstance(e, LocalEntryNotFoundError):
            offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
            why = ("HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached") + \
                ", and it is not in the local Hugging Face cache"
        elif isinstance(e, GatedRepoError):
            why = "the repo is gated: accept its terms and log in with huggingface-cli login"
        elif isinstance(e, RepositoryNotFoundError):
            why = "no such repo, or it is private"
        else:
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
        raise ValueError(f"{repo_id} is no local folder and cannot be fetched from the Hugging Face Hub ({why}); "
                         "download it where there is a network (huggingface-cli download ID --local-dir DIR) and "
                         "pass the folder") from None
    if not (folder / "config.json").is_file():
        raise ValueError(f"Hub repo {repo_id} has no config.json: it is not a transformers model")
    return folder
