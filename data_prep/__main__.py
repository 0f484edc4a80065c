"""python -m data_prep {openwebtext,text,merge,inspect} ... (fire); see docs/data_prep.md."""

from __future__ import annotations

import json
import os
import signal
import sys

from backpack_dist import cli

from .errors import PrepError
from .inspect import inspect as inspect_output
from .job import DEFAULTS, check_compression, check_job_options, run_job
from .merge import merge as merge_parts
from .openwebtext import HF_DATASET, hf_arrow_files


def _print(summary: dict) -> None:
    print(json.dumps(summary, indent=1))


class Commands:
    """Tokenize text into MDS shards of `seq_len + 1` uint16 GPT-2 tokens, in parallel jobs.
    Commands: text, openwebtext, merge, inspect (see docs/data_prep.md)."""

    # Every option after --input is keyword-only: a second path after `--input a.txt` would
    # otherwise land silently in the next parameter; fire refuses it as an extra argument instead.
    def text(self, input=None, *, out_dir=None, seq_len=512, tokenizer="gpt2", val_fraction=0.0005, seed=2357,
             num_shards=1, shard_index=0, workers=1, overwrite=False, text_field="text", one_doc_per_file=False,
             part_mb=DEFAULTS["part_mb"], max_doc_chars=DEFAULTS["max_doc_chars"],
             compression=DEFAULTS["compression"], progress=True):
        """Prepare local files: plain text (blank-line separated documents, or --one_doc_per_file),
        jsonl with a `text` field, parquet or arrow. --input takes ONE value: a file, a folder, a
        quoted glob ('data/*.jsonl') or a comma-separated list (a.txt,b.jsonl); not several
        space-separated paths. A lone job merges its output (ready to train on); the jobs of an
        array (--num_shards N) are joined by `merge` afterwards."""
        if out_dir is None:
            raise PrepError("--out_dir is required")
        _print(run_job(input, out_dir, seq_len=seq_len, tokenizer=tokenizer, val_fraction=val_fraction, seed=seed,
                       num_shards=num_shards, shard_index=shard_index, workers=workers, overwrite=overwrite,
                       text_field=text_field, one_doc_per_file=one_doc_per_file, part_mb=part_mb,
                       max_doc_chars=max_doc_chars, compression=compression, progress=progress))

    def openwebtext(self, *, out_dir=None, input=None, dataset=HF_DATASET, revision=None, seq_len=512,
                    tokenizer="gpt2", val_fraction=0.0005, seed=2357, num_shards=1, shard_index=0, workers=1,
                    overwrite=False, text_field="text", one_doc_per_file=False, part_mb=DEFAULTS["part_mb"],
                    max_doc_chars=DEFAULTS["max_doc_chars"], compression=DEFAULTS["compression"], progress=True):
        """Prepare OpenWebText: the HF dataset (downloaded into the HF cache once; --revision picks a
        branch), or local copies given with --input (parquet/arrow/jsonl; one value, as for `text`).
        Same options as `text`."""
        if out_dir is None:
            raise PrepError("--out_dir is required")
        options = dict(seq_len=seq_len, tokenizer=tokenizer, val_fraction=val_fraction, seed=seed,
                       num_shards=num_shards, shard_index=shard_index, workers=workers, overwrite=overwrite,
                       text_field=text_field, one_doc_per_file=one_doc_per_file, part_mb=part_mb,
                       max_doc_chars=max_doc_chars, compression=compression, progress=progress)
        if input is None:
            # Settings mistakes surface before the download (or the offline wait), not after.
            check_job_options(out_dir, **options)
            check_compression(compression)
            input = hf_arrow_files(str(dataset), None if revision is None else str(revision))
        self.text(input, out_dir=out_dir, **options)

    def merge(self, out_dir=None):
        """Join the parts of an array's jobs (--num_shards N) into OUT/train and OUT/val and write
        OUT/dataset.json, once all jobs have finished (a lone job does this itself)."""
        if out_dir is None:
            raise PrepError("--out_dir is required")
        info = merge_parts(str(out_dir))
        _print({k: info[k] for k in ("seq_len", "tokenizer", "num_parts", "splits", "skipped", "repaired")})

    def inspect(self, out_dir, *, samples=2, chars=300):
        """Print document/token counts and decode a few samples: inspect OUT [--samples 2] [--chars 300]."""
        print(inspect_output(str(out_dir), samples=samples, chars=chars))


def _stop_on_sigterm(signum, frame):
    # SLURM sends TERM before a time limit or preemption: unwind so that the worker pool is
    # terminated too; committed parts are kept and a rerun redoes the rest.
    if os.getpid() == _MAIN_PID:  # forked workers inherit the handler; only the job reports
        print("data_prep: stopped by SIGTERM; rerun the same command to continue", file=sys.stderr)
    raise SystemExit(128 + signum)


_MAIN_PID = os.getpid()


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    cli.run(Commands, name="python -m data_prep", prefix="data_prep: error", errors=(PrepError,))


if __name__ == "__main__":
    main()
