"""The options of `python -m backpack_dist.eval`: EvalOptions, a field per flag, checked when
made (from the command line or from Python); and the device check the senses and serve commands
share."""

from __future__ import annotations

import dataclasses
import typing

import torch

from .. import cli
from .tasks import DEFAULT_TASKS, TASKS, parse_tasks

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


@dataclasses.dataclass(frozen=True)
class EvalOptions:
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
    # The tasks' data flags: each is the data_flag of a task in tasks.TASKS.
    owt_val_dir: str | None = None
    """Data-prep output holding val/ and dataset.json, instead of rebuilding OWT's split from the hub."""
    lambada_path: str | None = None
    """OpenAI's lambada_test.jsonl, instead of the hub."""
    wikitext_path: str | None = None
    """wiki.test.raw, instead of the hub."""
    blimp_dir: str | None = None
    """Folder of BLiMP's UID.jsonl files, instead of the hub."""
    similarity_dir: str | None = None
    """Folder holding, in it or its subfolders, each set's original release (SimLex-999.txt,
    SimVerb-3500.txt, RG65.txt, WordSim-353 combined.tab) or collection file (EN-SIMLEX-999.txt,
    EN-SimVerb-3500.txt, EN-RG-65.txt, EN-WS-353-ALL.txt: word, word, score)."""
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


_missing = sorted({t.data_flag for t in TASKS.values()} - {f.name for f in dataclasses.fields(EvalOptions)})
if _missing:  # a task added to the table without its flag
    raise TypeError(f"EvalOptions has no field for the data flag of a task in tasks.TASKS: {', '.join(_missing)}")


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
