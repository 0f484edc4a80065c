"""python -m backpack_dist.export RUN [--step N] --out DIR

One consolidated safetensors file plus config.json from any ZeRO stage, through DeepSpeed's own
consolidation (lazily loaded, one tensor at a time)."""

import sys

from . import cli
from .checkpoint import export_in_memory
from .pretrained import check_export_target, save_pretrained


def export(run: str, out: str, step: int | None = None) -> None:
    try:
        from .convert.read_hf import is_hf_folder

        if is_hf_folder(run):
            raise ValueError(f"{run} is a transformers folder: the tools read it directly, or convert it with "
                             f"python -m backpack_dist.convert from-hf {run} --out DIR")
        check_export_target(out)  # before the slow consolidation
        state_dict, config, info, tokenizer = export_in_memory(run, step)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    model_name = info.pop("model_name")
    path = save_pretrained(state_dict, config, out, model_name=model_name, tokenizer=tokenizer, **info)
    print(f"exported {model_name} step {info['step']} to {path}")


if __name__ == "__main__":
    cli.run(export, name="python -m backpack_dist.export")
