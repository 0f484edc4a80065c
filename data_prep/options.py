"""The options of a prep job, one dataclass each, checked once at construction.

PrepSettings decide the output (a rerun with other settings is refused); JobOptions add how this
job runs (which shard of an array, workers, progress) and where it writes."""

from __future__ import annotations

import dataclasses
import os

from backpack_dist import cli
from backpack_dist.tokenizer import GPT2

from .errors import PrepError

MAX_SKIPPED = 0.05  # the default --max_skipped of `text`, `openwebtext` and `merge`


def check_max_skipped(options) -> None:
    cli.check_range(options, "max_skipped", 0.0, 1.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrepSettings:
    seq_len: int = 512
    """Tokens per sample are seq_len + 1 (consecutive samples overlap by one token)."""
    tokenizer: str = GPT2
    """gpt2 (tiktoken's encoding) or the path of a .tiktoken file."""
    val_fraction: float = 0.0005
    """The share of documents held out for validation, chosen by a hash of each document."""
    seed: int = 2357
    """The key of the validation hash."""
    text_field: str = "text"
    """The field holding the text in jsonl, parquet and arrow input."""
    one_doc_per_file: bool = False
    """Plain-text files are one document each (default: documents are separated by blank lines)."""
    part_mb: float = 64
    """Input bytes per part: the unit of work, restart and parallelism."""
    max_doc_chars: int = 1_000_000
    """Longer documents are cut (counted as repaired)."""
    compression: str = "zstd:1"
    """A streaming codec (zstd:1 .. zstd:22, gz, br, bz2, snappy) or none. zstd level 1: tokens
    compress 1.32x (level 3: 1.40x) at twice the speed, which keeps shard writing a small share
    of a job that tiktoken should dominate."""

    def __post_init__(self):
        cli.check_range(self, "seq_len", low=1)
        cli.check_range(self, "seed", 0, 2**63 - 1)  # the 8-byte key of the validation hash
        cli.check_range(self, "max_doc_chars", low=1)
        if not 0.0 <= self.val_fraction < 1.0:
            raise PrepError(f"--val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.part_mb <= 0:
            raise PrepError(f"--part_mb must be positive, got {self.part_mb}")

    @property
    def tokenizer_spec(self) -> str:
        """gpt2, or the tokenizer file's absolute path (the jobs of an array may start elsewhere)."""
        return self.tokenizer if self.tokenizer == GPT2 else os.path.abspath(self.tokenizer)

    def settings(self) -> PrepSettings:
        """These settings alone (without a subclass's job options)."""
        return PrepSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PrepSettings)})


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobOptions(PrepSettings):
    out_dir: str = ""
    """The output folder (required): parts, then OUT/train, OUT/val and OUT/dataset.json."""
    num_shards: int = 1
    """Jobs in the array; part p belongs to job p % num_shards. A lone job merges its output."""
    shard_index: int = 0
    """This job's index in the array (SLURM_ARRAY_TASK_ID)."""
    workers: int = 1
    """Worker processes of this job."""
    overwrite: bool = False
    """Replace an output folder prepared with other settings."""
    progress: bool = True
    """Show progress bars."""
    max_skipped: float = MAX_SKIPPED
    """The merge fails (no dataset.json; committed parts are kept) when more than this share of
    the input records are invalid JSON or lack --text_field; 1 accepts any share. Not a setting
    of the output: a rerun with another value reuses the parts."""

    def __post_init__(self):
        super().__post_init__()
        if not self.out_dir:
            raise PrepError("--out_dir is required")
        cli.check_range(self, "num_shards", low=1)
        cli.check_range(self, "workers", low=1)
        check_max_skipped(self)
        if not 0 <= self.shard_index < self.num_shards:
            raise PrepError(f"--shard_index must be in [0, --num_shards), got {self.shard_index} of {self.num_shards}")
