"""Offline data preparation: text corpora -> GPT-2 tokens packed into streaming MDS shards.

    prepare_text(inputs, out_dir, ...)       one job (of num_shards), in-process; a lone job merges itself
    merge(out_dir, max_skipped=0.05)         join the parts of an array's jobs; writes OUT/dataset.json
    prepare_and_merge(inputs, out_dir, ...)  one lone job, returning its dataset info
    read_dataset_info(out_dir)               the merged output's dataset.json

The CLI is `python -m data_prep {openwebtext,text,merge,inspect}`; see docs/data_prep.md.
"""

from __future__ import annotations

from .errors import PrepError
from .inspect import inspect, iter_document_tokens, iter_documents
from .job import run_job
from .merge import merge, read_dataset_info
from .options import JobOptions, PrepSettings

__all__ = [
    "PrepError",
    "JobOptions",
    "PrepSettings",
    "inspect",
    "iter_document_tokens",
    "iter_documents",
    "merge",
    "prepare_and_merge",
    "prepare_text",
    "read_dataset_info",
    "run_job",
]


def prepare_text(inputs, out_dir, *, progress=False, **options) -> dict:
    """Run one prep job over local files (see sources.py for the formats); options are the fields
    of JobOptions (data_prep/options.py). With num_shards=1 the output is merged (ready to train
    on) when it returns. Returns the job summary."""
    try:
        job = JobOptions(out_dir=str(out_dir), progress=progress, **options)
    except TypeError as e:  # an option that is not a field
        raise PrepError(f"unknown option: {e}") from None
    return run_job(inputs, job)


def prepare_and_merge(inputs, out_dir, **kwargs) -> dict:
    """prepare_text as one lone job (which merges itself); returns the dataset info (dataset.json)."""
    kwargs.pop("num_shards", None)
    kwargs.pop("shard_index", None)
    prepare_text(inputs, out_dir, **kwargs)
    return read_dataset_info(out_dir)
