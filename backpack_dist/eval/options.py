"""The options of `python -m backpack_dist.eval`: EvalOptions, a field per flag, checked when
made (from the command line or from Python); and the device check the senses and serve commands
share."""

from __future__ import annotations

import dataclasses
import typing

import torch

from .. import cli
from .tasks import DATA_FLAGS, DEFAULT_TASKS, parse_tasks

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


@dataclasses.dataclass(frozen=True)
class CommonEvalOptions:
    checkpoint: str = cli.positional()
    """An export dir, a training run dir or one of its checkpoints, or a transformers folder."""
    tasks: str = DEFAULT_TASKS
    """Comma-separated names from the list of tasks above; a group (similarity) means all its
    sets, each of which can be named alone."""
    out: str = "results.json"
    """The results JSON to write."""
    limit: int | None = None
    """Score only the first N examples of each task (quick checks)."""
    batch_size: int = 16
    """Requests scored at once."""
    device: str | None = None
    """cpu, cuda or cuda:N; default: the GPU when there is one."""
    dtype: typing.Literal["bf16", "fp32"] | None = None
    """bf16 or fp32; default: bf16 autocast on GPUs."""
    progress: bool = True
    """Show progress bars (--noprogress hides them)."""

    def __post_init__(self):
        # From the command line the fields' types are parsed already; from Python they are checked here.
        parse_tasks(self.tasks)  # an unknown task fails before anything loads
        if self.dtype is not None and self.dtype not in DTYPES:
            raise cli.UsageError(f"unknown --dtype {self.dtype!r}: use bf16 or fp32")
        for name in ("limit", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise cli.UsageError(f"--{name} must be an integer, got {value!r}")
        cli.check_range(self, "limit", low=1)
        cli.check_range(self, "batch_size", low=1)

    @property
    def task_names(self) -> list[str]:
        """--tasks as task names (groups expanded), in the order given."""
        return parse_tasks(self.tasks)


# The tasks' data flags (--lambada_path, ...) are fields too, one per flag in tasks.TASKS with its
# help: a new task needs no edit here.
EvalOptions = dataclasses.make_dataclass(
    "EvalOptions", [(flag, typing.Optional[str], dataclasses.field(default=None, metadata={"help": help}))
                    for flag, help in DATA_FLAGS.items()],
    bases=(CommonEvalOptions,), frozen=True)
EvalOptions.__module__ = __name__
EvalOptions.__doc__ = "The options of `python -m backpack_dist.eval`: the common ones and each task's data flag."


def resolve_device(device, flag: str = "--device") -> str:
    """The device to run on: the given one when this machine has it, else the GPU when there is
    one, else the CPU. ValueError for an unknown name or a GPU that is not there."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(str(device))
    except RuntimeError:
        raise ValueError(f"unknown {flag} {device!r}: use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{flag} {device} asks for a GPU but none is available here: use {flag} cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{flag} {device}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    elif parsed.type != "cpu":
        raise ValueError(f"unsupported {flag} {device!r}: use cpu, cuda or cuda:N")
    return str(parsed)
