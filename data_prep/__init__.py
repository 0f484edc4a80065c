"""Offline data preparation: text corpora -> GPT-2 tokens packed into streaming MDS shards.

    prepare_text(inputs, out_dir, ...)       one job (of num_shards), in-process; a lone job merges itself
    merge(out_dir)                           join the parts of an array's jobs; writes OUT/dataset.json
    prepare_and_merge(inputs, out_dir, ...)  one lone job, returning its dataset info
    read_dataset_info(out_dir)               the merged output's dataset.json

The CLI is `python -m data_prep {openwebtext,text,merge,inspect}`; see docs/data_prep.md.
"""

from __future__ import annotations

from .errors import PrepError
from .inspect import inspect, iter_document_tokens, iter_documents
from .job import run_job
from .merge import merge, read_dataset_info

__all__ = [
    "PrepError",
    "inspect",
    "iter_document_tokens",
    "iter_documents",
    "merge",
    "prepare_and_merge",
    "prepare_text",
    "read_dataset_info",
    "run_job",
]


def prepare_text(inputs, out_dir, *, seq_len=512, tokenizer="gpt2", val_fraction=0.0005, seed=2357, workers=1,
                 num_shards=1, shard_index=0, overwrite=False, progress=False, **options) -> dict:
    """Run one prep job over local files (see sources.py for the formats). Options: text_field,
    one_doc_per_file, part_mb, max_doc_chars. With num_shards=1 the output is merged (ready to
    train on) when it returns. Returns the job summary."""
    return run_job(inputs, out_dir, seq_len=seq_len, tokenizer=tokenizer, val_fraction=val_fraction, seed=seed,
                   workers=workers, num_shards=num_shards, shard_index=shard_index, overwrite=overwrite,
                   progress=progress, **options)


def prepare_and_merge(inputs, out_dir, **kwargs) -> dict:
    """prepare_text as one lone job (which merges itself); returns the dataset info (dataset.json)."""
    kwargs.pop("num_shards", None)
    kwargs.pop("shard_index", None)
    prepare_text(inputs, out_dir, **kwargs)
    return read_dataset_info(out_dir)
