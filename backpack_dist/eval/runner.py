"""`python -m backpack_dist.eval --checkpoint PATH --tasks ...`: load a checkpoint, read every
task's data (failing early on bad input), score, and write one results JSON atomically."""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .. import atomic
from ..cli import nearest_existing
from ..pretrained import load_pretrained
from .options import DTYPES, EvalOptions, resolve_device
from .scoring import Scorer
from .tasks import DEFAULT_TASKS, TASKS, Loaded, load_order

FORMAT = "backpack-dist-eval/1"


def check_out(out) -> None:
    """Fail before any scoring when the results file cannot be written: --out must not be a
    folder, and its nearest existing parent must be a folder that accepts new files."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; pass a file name such as {out / 'results.json'}")
    parent = nearest_existing(out.parent)
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is not a folder; pass a path in a writable folder")
    try:  # os.access says yes to root even where nothing can be created (/proc, read-only mounts)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=parent)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot create files in {parent} ({e.strerror}); "
                         "pass a path in a writable folder") from None
    os.close(fd)
    os.unlink(probe)


def _setup_distributed(device):
    """Under torchrun (WORLD_SIZE > 1) join the process group and use this rank's GPU. Returns the
    device; the caller leaves the group (evaluate's finally) when it joined it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available() and device in (None, "cuda")
        dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            return f"cuda:{torch.cuda.current_device()}"
        return device or "cpu"
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate(checkpoint: str | EvalOptions, tasks: str = DEFAULT_TASKS, out: str | None = "results.json",
             **flags) -> dict:
    """Score `checkpoint` on `tasks`, write the results JSON to `out` (None: no file) and return the
    report. Any other EvalOptions field is a keyword (limit=, batch_size=, lambada_path=, ...); or
    pass one EvalOptions alone."""
    if isinstance(checkpoint, EvalOptions):
        if flags or tasks != DEFAULT_TASKS or out != "results.json":
            raise TypeError("evaluate(options) takes the EvalOptions alone; change them with dataclasses.replace")
        options = checkpoint
    else:
        options = EvalOptions(checkpoint, tasks, out, **flags)  # checks every flag but the device and --out
    # Every flag is checked before the model and data load, so a typo fails in seconds.
    device = options.device
    if device is not None:  # None: _setup_distributed picks the GPU (each rank's own under torchrun)
        device = resolve_device(device)
    if options.out and os.environ.get("RANK", "0") == "0":  # rank 0 writes the results
        check_out(options.out)
    joined = not dist.is_initialized()
    device = _setup_distributed(device)
    joined = joined and dist.is_initialized()
    try:
        return _evaluate(options, device)
    finally:
        if joined:
            dist.destroy_process_group()


def _evaluate(options: EvalOptions, device) -> dict:
    checkpoint, out, limit = options.checkpoint, options.out, options.limit
    if not Path(checkpoint).exists():
        raise ValueError(f"--checkpoint {checkpoint} does not exist (give an export, a run dir or a checkpoint folder)")
    task_names = options.task_names
    # Read the data before the model (rebuilding a run's weights takes minutes) and before
    # scoring anything, so a bad file or a missing flag fails in seconds, not hours. Tasks whose
    # data are checked against the model (OWT: its tokenizer and context) come after it.
    data, records = {}, {}
    order = load_order(task_names)
    for task in (t for t in order if not t.needs_model):
        data[task.name], records[task.name] = task.load(task.flag_value(options), limit, None)
    model, enc, info = load_pretrained(checkpoint, device)
    scorer = Scorer(model, enc.eot_token, batch_size=options.batch_size, dtype=DTYPES.get(options.dtype),
                    progress=options.progress)
    loaded = Loaded(model, enc, info, scorer)
    for task in (t for t in order if t.needs_model):
        data[task.name], records[task.name] = task.load(task.flag_value(options), limit, loaded)

    results, seconds = {}, {}
    for name in task_names:
        start = time.perf_counter()
        results[name] = TASKS[name].evaluate(loaded, data[name])
        seconds[name] = round(time.perf_counter() - start, 3)

    report = {
        "format": FORMAT,
        "checkpoint": str(Path(checkpoint).resolve()),
        "model_name": info.get("model_name"),
        "step": info.get("step"),
        "model": model.config.to_dict(),
        "tokenizer_fingerprint": info.get("tokenizer_fingerprint"),
        "settings": {"limit": limit, "batch_size": options.batch_size, "dtype": str(scorer.dtype).replace("torch.", ""),
                     "device": str(scorer.device), "world_size": dist.get_world_size() if dist.is_initialized() else 1},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "results": results,
        "data": records,
        "seconds": seconds,
    }
    if out and (not dist.is_initialized() or dist.get_rank() == 0):
        atomic.write_json(out, report, indent=2)
        report = {**report, "written_to": str(Path(out).absolute())}  # for the summary; not in the file
    return report
