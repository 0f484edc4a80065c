"""The SLURM side of a plan: what the scripts in slurm/ ask for (read from their #SBATCH lines and
defaults, so the scripts stay the one place for them), the sbatch command of each job, and the
submission of a whole plan in order."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

from ..cli import UsageError

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "slurm"
# What slurm/prep_owt.sh prints after submitting its array and merge job.
PREP_SUBMITTED = re.compile(r"prep array job (\d+) \((\d+) shards\) and merge job (\d+)")


@functools.cache
def sbatch_defaults(script: str) -> dict[str, str]:
    """The #SBATCH --key=value lines of a script in slurm/ (e.g. nodes, gres, time)."""
    found = {}
    for line in (SLURM / script).read_text().splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", line)
        if match:
            found[match[1]] = match[2] or ""
    return found


@functools.cache
def shell_default(script: str, variable: str) -> str:
    """The default of a setting `VAR=${VAR:-default}` in a script of slurm/ (or slurm/lib/)."""
    match = re.search(rf"^{variable}=\$\{{{variable}:-([^}}]*)\}}", (SLURM / script).read_text(), re.M)
    if not match:
        raise RuntimeError(f"slurm/{script} has no default for {variable}")
    return match[1]


def merge_flags() -> dict[str, str]:
    """The --key=value flags that slurm/prep_owt.sh gives its merge job (cpus-per-task, time, ...)."""
    text = (SLURM / "prep_owt.sh").read_text()
    line = re.search(r"merge=\$\(sbatch(.*?)\"\$@\"", text, re.S)
    if not line:
        raise RuntimeError("slurm/prep_owt.sh no longer submits its merge job as merge=$(sbatch ... \"$@\" ...)")
    return dict(re.findall(r"--([\w-]+)=(\S+)", line[1]))


def gpus_per_node(script: str) -> int:
    gres = sbatch_defaults(script).get("gres", "")
    return int(gres.rsplit(":", 1)[1]) if gres.startswith("gpu:") else 0


def sbatch_command(job, ids: dict[str, str], sbatch_args: list[str]) -> list[str]:
    """The command that submits `job` (a plan.Job) once the jobs it waits for have the ids in `ids`."""
    script = str(SLURM / job.script)
    if job.kind == "prep":  # prep_owt.sh submits its array and the merge job itself
        return ["bash", script, *sbatch_args]
    command = ["sbatch", "--parsable", f"--job-name={job.name}"]
    if job.after:
        command += [f"--dependency=afterok:{':'.join(ids[name] for name in job.after)}", "--kill-on-invalid-dep=yes"]
    return [*command, *sbatch_args, script, *job.args]


def submit(plan, sbatch_args: list[str], env: dict[str, str], log=print) -> dict[str, str]:
    """Submit every job of the plan in order; {job name: job id}. When one submission fails, the
    jobs submitted before it are cancelled, so no half-submitted study is left queued."""
    ids: dict[str, str] = {}
    for job in plan.jobs:
        if job.name in ids:  # the merge job, submitted by prep_owt.sh with its array
            continue
        command = sbatch_command(job, ids, sbatch_args)
        try:
            result = subprocess.run(command, env={**env, **job.env}, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            result = subprocess.CompletedProcess(command, 1, "", str(e))
        out = result.stdout.strip()
        if job.kind == "prep":
            found = PREP_SUBMITTED.search(out)
            new = {job.name: found[1], job.merged_by: found[3]} if result.returncode == 0 and found else {}
        else:
            new = {job.name: out.split(";")[0]} if result.returncode == 0 and out.split(";")[0].isdigit() else {}
        if not new:
            _cancel(list(ids.values()), env)
            why = (result.stderr.strip() or out or f"exit {result.returncode}").splitlines()[-1]
            cancelled = f"; cancelled the {len(ids)} job(s) submitted before it" if ids else ""
            raise UsageError(f"submitting {job.name} failed ({' '.join(command[:2])}...: {why}){cancelled}; "
                             "fix the cause and rerun (finished work is kept: runs resume, data is reused)")
        ids.update(new)
        for name, job_id in new.items():
            log(f"submitted {name}: job {job_id}")
    return ids


def _cancel(job_ids: list[str], env: dict[str, str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], env=env, capture_output=True, timeout=60)
