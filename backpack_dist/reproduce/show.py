"""The plan in words: a table of its jobs (resources, dependencies, tokens, GPU-hours), the cost
of the whole study and what each estimate rests on, then the exact sbatch command of every job."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from .slurm import sbatch_command


def _path(path) -> str:
    """Paths relative to the working folder when under it (shorter to read)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _hours(limit: str) -> float:
    """sbatch's --time in hours: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    days, _, rest = limit.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:
        hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) == 3 else (0, *(parts + [0])[:2])
    return float(days or 0) * 24 + hours + minutes / 60 + seconds / 3600


def _tokens(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("s" if n != 1 else "")


def _resources(job) -> str:
    if job.array:
        return f"{job.array} jobs x {_count(job.cpus, 'CPU')}"
    if not job.gpus_per_node:
        return _count(job.cpus, "CPU")
    return f"{_count(job.nodes, 'node')} x {_count(job.gpus_per_node, 'GPU')}"


def _after(job) -> str:
    if not job.after:
        return "-"
    return ", ".join(job.after) if len(job.after) <= 2 else f"{len(job.after)} evals"


def render(plan, sbatch_args: list[str], common_env: dict[str, str], dry_run: bool) -> str:
    trainings = plan.trainings
    lines = [f"The paper's study: {len(trainings)} training run(s), {len(plan.jobs)} SLURM jobs"
             + (" (dry run: nothing is submitted)" if dry_run else ""),
             f"  data   {_path(plan.data_dir)}: "
             + ("prepared (dataset.json), reused" if plan.data_ready else
                "no dataset.json yet, so slurm/prep_owt.sh prepares it first"),
             f"  runs   {_path(plan.runs_dir)}/<run>; table and plot in {_path(plan.runs_dir)}/table2.md, "
             f"{_path(plan.runs_dir)}/val_loss.png; job logs <job>-<id>.out in {_path(Path.cwd()) or '.'}", ""]
    header = ("#", "job", "script", "resources", "after (afterok)", "tokens", "GPU-hours", "wall per job")
    rows = []
    for i, job in enumerate(plan.jobs, 1):
        script = f"slurm/{job.script}" + (f" {job.args[0]}" if job.kind == "merge" else "")
        gpu_hours = wall = "-"
        if job.estimate:
            gpu_hours = f"{job.estimate.gpu_hours:,.1f}" + ("" if job.estimate.measured else "*")
            hours = job.estimate.gpu_hours / (job.nodes * job.gpus_per_node)
            starts = math.ceil(hours / _hours(job.time_limit)) if job.time_limit else 1
            wall = f"{hours:.1f} h" + (f" ({starts} starts of {job.time_limit})" if starts > 1 else "")
        rows.append((str(i), job.name, script, _resources(job), _after(job), _tokens(job.tokens), gpu_hours, wall))
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]
    for row in (header, *rows):
        lines.append("  ".join(cell.rjust(w) if c in (0, 5, 6) else cell.ljust(w)
                               for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    total_tokens = sum(j.tokens for j in trainings)
    total_hours = sum(j.estimate.gpu_hours for j in trainings)
    lines += ["", f"Cost of the trainings: {_tokens(total_tokens)} tokens, about {total_hours:,.0f} GPU-hours "
                  f"({plan.gpu}-class GPUs); evals and the table are not counted (each eval: 1 GPU, at most "
                  f"{next((j.time_limit for j in plan.jobs if j.kind == 'eval'), '-')} per start)."]
    bases = sorted({j.estimate.basis for j in trainings if not j.estimate.measured})
    measured = sorted({f"{j.name}: {j.estimate.basis}" for j in trainings if j.estimate.measured})
    lines += [f"  * {basis}" for basis in bases] + [f"  {m}" for m in measured]
    lines.append("  wall per job: its GPU-hours over its GPUs (linear scaling assumed); each start runs at most its "
                 "--time, then the job saves, requeues and resumes")
    lines += ["", "Jobs are submitted in this order; @name stands for that job's id:",
              "  (every job also gets " + " ".join(f"{k}={_path(v)}" for k, v in common_env.items()) + ")"]
    ids = {job.name: f"@{job.name}" for job in plan.jobs}
    for i, job in enumerate(plan.jobs, 1):
        if job.kind == "merge":
            lines.append(f"  {i}. {job.name}: submitted by slurm/prep_owt.sh with prep-owt (afterok)")
            continue
        settings = " ".join(f"{k}={shlex.quote(_path(v) if k.endswith('DIR') else v)}" for k, v in job.env.items())
        command = [_path(part) if part.startswith("/") else part
                   for part in sbatch_command(job, ids, sbatch_args)]
        lines.append(f"  {i}. {settings} {shlex.join(command)}")
    return "\n".join(lines)
