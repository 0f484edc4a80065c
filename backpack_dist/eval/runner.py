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
from fire.decorators import SetParseFn

from .. import atomic
from ..cli import nearest_existing
from ..pretrained import load_pretrained
from .blimp import evaluate_blimp, load_blimp
from .lambada import evaluate_lambada, load_lambada
from .options import int_option, resolve_device
from .owt import evaluate_owt, load_owt
from .scoring import Scorer
from .similarity import SETS, evaluate_similarity, load_similarity
from .wikitext import evaluate_wikitext, load_wikitext

FORMAT = "backpack-dist-eval/1"
LM_TASKS = ("owt", "lambada", "wikitext", "blimp")
ALL_TASKS = LM_TASKS + ("similarity",)
DEFAULT_TASKS = ",".join(ALL_TASKS)
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def parse_tasks(tasks) -> list[str]:
    """"owt,lambada" (or fire's tuple of it) -> task names; "similarity" means all four sets."""
    names = tasks.split(",") if isinstance(tasks, str) else [str(t) for t in tasks]
    out = []
    for name in (n.strip() for n in names if n.strip()):
        expanded = list(SETS) if name == "similarity" else [name]
        for task in expanded:
            if task not in LM_TASKS and task not in SETS:
                raise ValueError(f"unknown task {task!r}: choose from {', '.join(ALL_TASKS + tuple(SETS))}")
            if task not in out:
                out.append(task)
    if not out:
        raise ValueError(f"no tasks given: pass --tasks with some of {', '.join(ALL_TASKS)}")
    return out


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


# Text flags stay text: fire would read --out 2024 as a number and --tasks owt,lambada as a tuple.
@SetParseFn(str, "checkpoint", "tasks", "out", "device", "dtype", "owt_val_dir", "lambada_path", "wikitext_path",
            "blimp_dir", "similarity_dir")
def evaluate(checkpoint, tasks=DEFAULT_TASKS, out="results.json", *, limit=None, batch_size=16, device=None,
             dtype=None, owt_val_dir=None, lambada_path=None, wikitext_path=None, blimp_dir=None,
             similarity_dir=None, progress=True) -> dict:
    # Every flag is checked before the model and data load, so a typo fails in seconds.
    task_names = parse_tasks(tasks)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}: use bf16 or fp32")
    batch_size = int_option(batch_size, "--batch_size", low=1)
    limit = None if limit is None else int_option(limit, "--limit", low=1)
    if device is not None:  # None: _setup_distributed picks the GPU (each rank's own under torchrun)
        device = resolve_device(device)
    if out and os.environ.get("RANK", "0") == "0":  # rank 0 writes the results
        check_out(out)
    joined = not dist.is_initialized()
    device = _setup_distributed(device)
    joined = joined and dist.is_initialized()
    try:
        return _evaluate(checkpoint, task_names, out, limit, batch_size, device, dtype, owt_val_dir, lambada_path,
                         wikitext_path, blimp_dir, similarity_dir, progress)
    finally:
        if joined:
            dist.destroy_process_group()


def _evaluate(checkpoint, task_names, out, limit, batch_size, device, dtype, owt_val_dir, lambada_path, wikitext_path,
              blimp_dir, similarity_dir, progress) -> dict:
    if not Path(checkpoint).exists():
        raise ValueError(f"--checkpoint {checkpoint} does not exist (give an export, a run dir or a checkpoint folder)")
    # Read the data before the model (rebuilding a run's weights takes minutes) and before
    # scoring anything, so a bad file or a missing flag fails in seconds, not hours. OWT comes
    # last: its samples are checked against the model's tokenizer and context.
    data, records = {}, {}
    sim_names = [t for t in task_names if t in SETS]
    if sim_names:
        sim_data, sim_records = load_similarity(similarity_dir, sim_names)
        data.update(sim_data)
        records.update(sim_records)
    if "lambada" in task_names:
        data["lambada"], records["lambada"] = load_lambada(lambada_path, limit)
    if "wikitext" in task_names:
        data["wikitext"], records["wikitext"] = load_wikitext(wikitext_path, limit)
    if "blimp" in task_names:
        data["blimp"], records["blimp"] = load_blimp(blimp_dir, limit)
    model, enc, info = load_pretrained(checkpoint, device)
    scorer = Scorer(model, enc.eot_token, batch_size=batch_size, dtype=DTYPES.get(dtype), progress=progress)
    if "owt" in task_names:
        data["owt"], records["owt"] = load_owt(owt_val_dir, enc, model.config.seq_len,
                                               info.get("tokenizer_fingerprint"), limit, model.config.vocab_size)

    results, seconds = {}, {}
    for task in task_names:
        start = time.perf_counter()
        if task == "owt":
            results[task] = evaluate_owt(scorer, data[task])
        elif task == "lambada":
            results[task] = evaluate_lambada(scorer, enc, data[task])
        elif task == "wikitext":
            results[task] = evaluate_wikitext(scorer, enc, data[task])
        elif task == "blimp":
            results[task] = evaluate_blimp(scorer, enc, data[task])
        else:
            results[task] = evaluate_similarity(model, enc, data[task], name=task)
        seconds[task] = round(time.perf_counter() - start, 3)

    report = {
        "format": FORMAT,
        "checkpoint": str(Path(checkpoint).resolve()),
        "model_name": info.get("model_name"),
        "step": info.get("step"),
        "model": model.config.to_dict(),
        "tokenizer_fingerprint": info.get("tokenizer_fingerprint"),
        "settings": {"limit": limit, "batch_size": batch_size, "dtype": str(scorer.dtype).replace("torch.", ""),
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
