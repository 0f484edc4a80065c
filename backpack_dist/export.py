"""python -m backpack_dist.export RUN [--step N] --out DIR

One consolidated safetensors file plus config.json from any ZeRO stage, through DeepSpeed's own
consolidation (lazily loaded, one tensor at a time)."""

from __future__ import annotations

import dataclasses

from . import cli
from .checkpoint import export_in_memory
from .pretrained import check_export_target, save_pretrained


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    run: str = cli.positional()
    """A run directory, one of its checkpoints (RUN/checkpoints/step_N) or a DeepSpeed checkpoint folder."""
    out: str = ""
    """The folder to write model.safetensors and config.json into (required)."""
    step: int | None = None
    """The step to export; default: the newest complete checkpoint."""

    def __post_init__(self):
        if not self.out:
            raise cli.UsageError("missing --out: give it as --out DIR, the folder to write the export into")
        if self.step is not None and self.step < 0:
            raise cli.UsageError(f"--step must be >= 0, got {self.step}")


def export(options: ExportOptions) -> None:
    """Export a training checkpoint for the tools: model.safetensors + config.json."""
    try:
        from .convert.read_hf import is_hf_folder

        if is_hf_folder(options.run):
            raise ValueError(f"{options.run} is a transformers folder: the tools read it directly, or convert it "
                             f"with python -m backpack_dist.convert from-hf {options.run} --out DIR")
        check_export_target(options.out)  # before the slow consolidation
        state_dict, config, info, tokenizer = export_in_memory(options.run, options.step)
    except (ValueError, FileNotFoundError) as e:
        raise cli.UsageError(str(e)) from None
    model_name = info.pop("model_name")
    path = save_pretrained(state_dict, config, options.out, model_name=model_name, tokenizer=tokenizer, **info)
    print(f"exported {model_name} step {info['step']} to {path}")


if __name__ == "__main__":
    cli.run(export, name="python -m backpack_dist.export")
