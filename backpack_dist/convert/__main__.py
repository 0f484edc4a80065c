"""python -m backpack_dist.convert from-hf SRC --out DIR | to-hf RUN_OR_EXPORT --out DIR

from-hf: a transformers folder or Hub id (the authors' Backpack, or GPT2LMHeadModel such as
gpt2) -> our export, which eval, senses, serve and `train --init_from` read.
to-hf: an export, run or checkpoint -> a folder transformers loads (a Transformer as a plain
GPT2LMHeadModel, a Backpack in the authors' format).
"""

from __future__ import annotations

import dataclasses
import sys

from .. import cli


def _require_out(out: str) -> None:
    if not out:
        raise cli.UsageError("missing --out: give it as --out DIR, the folder to write into")


@dataclasses.dataclass(frozen=True)
class FromHfOptions:
    src: str = cli.positional()
    """A local folder or Hub id (stanfordnlp/backpack-gpt2, gpt2) in the authors' Backpack or GPT2LMHeadModel format."""
    out: str = ""
    """The folder to write our export into (required)."""

    def __post_init__(self):
        _require_out(self.out)


@dataclasses.dataclass(frozen=True)
class ToHfOptions:
    checkpoint: str = cli.positional()
    """An export, a run directory or one of its checkpoints."""
    out: str = ""
    """The folder to write the transformers files into (required)."""

    def __post_init__(self):
        _require_out(self.out)


def from_hf(options: FromHfOptions) -> None:
    """Convert the authors' Backpack or a GPT2LMHeadModel (local folder or Hub id) to our export."""
    from ..pretrained import check_export_target, save_pretrained
    from .hub import resolve_source
    from .read_hf import read_hf_folder

    try:
        check_export_target(options.out)  # before a download
        folder, hub_id = resolve_source(options.src)
        state_dict, config, info, tokenizer = read_hf_folder(folder, hub_id)
    except (ValueError, FileNotFoundError) as e:
        raise cli.UsageError(str(e)) from None
    model_name = info.pop("model_name")
    path = save_pretrained(state_dict, config, options.out, model_name=model_name, tokenizer=tokenizer, **info)
    print(f"converted {info['source']} ({info['source_format']}, {config.family}) to {path}")


def to_hf(options: ToHfOptions) -> None:
    """Write an export, run or checkpoint as a transformers folder: GPT2LMHeadModel, or the authors' Backpack."""
    from ..pretrained import load_state
    from .write_hf import check_hf_target, write_hf

    try:
        check_hf_target(options.out)  # before the slow load
        state_dict, config, info, tokenizer = load_state(options.checkpoint)
    except (ValueError, FileNotFoundError) as e:
        raise cli.UsageError(str(e)) from None
    source = info.get("source") or info.get("checkpoint") or options.checkpoint
    path = write_hf(state_dict, config, tokenizer, options.out, model_name=info.get("model_name"),
                    step=info.get("step"), source=str(source))
    kind = "the authors' Backpack format" if config.is_backpack else "GPT2LMHeadModel"
    print(f"wrote {info.get('model_name')} as {kind} to {path}")


COMMANDS = {"from-hf": from_hf, "to-hf": to_hf}


def main(argv=None):
    cli.run(COMMANDS, sys.argv[1:] if argv is None else argv, name="python -m backpack_dist.convert")


if __name__ == "__main__":
    main()
