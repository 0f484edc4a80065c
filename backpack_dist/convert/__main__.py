"""python -m backpack_dist.convert from-hf SRC --out DIR | to-hf RUN_OR_EXPORT --out DIR

from-hf: a transformers folder or Hub id (the authors' Backpack, or GPT2LMHeadModel such as
gpt2) -> our export, which eval, senses, serve and `train --init_from` read.
to-hf: an export, run or checkpoint -> a folder transformers loads (a Transformer as a plain
GPT2LMHeadModel, a Backpack in the authors' format).
"""

import sys

from fire.decorators import SetParseFn

from .. import cli


@SetParseFn(str, "src", "out")  # a Hub id or folder named 123 stays text
def from_hf(src: str, out: str) -> None:
    """Convert a local folder or Hub id in the authors' Backpack format or GPT2LMHeadModel format to our export."""
    from ..pretrained import check_export_target, save_pretrained
    from .hub import resolve_source
    from .read_hf import read_hf_folder

    check_export_target(out)  # before a download
    folder, hub_id = resolve_source(src)
    state_dict, config, info, tokenizer = read_hf_folder(folder, hub_id)
    model_name = info.pop("model_name")
    path = save_pretrained(state_dict, config, out, model_name=model_name, tokenizer=tokenizer, **info)
    print(f"converted {info['source']} ({info['source_format']}, {config.family}) to {path}")


@SetParseFn(str, "checkpoint", "out")
def to_hf(checkpoint: str, out: str) -> None:
    """Write an export, run or checkpoint as a transformers folder: GPT2LMHeadModel, or the authors' Backpack."""
    from ..pretrained import load_state
    from .write_hf import check_hf_target, write_hf

    check_hf_target(out)  # before the slow load
    state_dict, config, info, tokenizer = load_state(checkpoint)
    path = write_hf(state_dict, config, tokenizer, out, model_name=info.get("model_name"), step=info.get("step"),
                    source=str(info.get("source") or info.get("checkpoint") or checkpoint))
    kind = "the authors' Backpack format" if config.is_backpack else "GPT2LMHeadModel"
    print(f"wrote {info.get('model_name')} as {kind} to {path}")


COMMANDS = {"from-hf": from_hf, "to-hf": to_hf}


def main(argv=None):
    cli.run(COMMANDS, sys.argv[1:] if argv is None else argv, name="python -m backpack_dist.convert",
            errors=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
