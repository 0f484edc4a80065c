"""python -m backpack_dist.reproduce [--dry_run] [--only NAME,...] [--ablation]
(bash slurm/reproduce_paper.sh passes its arguments here).

Settings that go on to the jobs' scripts are environment variables, as for the scripts themselves
(docs/cluster.md): EXTRA_ARGS (training flags for every run, e.g. sizes and steps for a trial),
TASKS and EVAL_ARGS (eval.sh), PREP_ARGS and NUM_SHARDS (prep_owt.sh), GPUS_PER_NODE, and
SBATCH_ARGS (sbatch flags for every job, e.g. "-p gpu -A proj")."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys

from .. import cli
from ..eval.results import ABLATION_STEPS
from . import cost, show
from . import plan as planning
from .slurm import REPO, submit


@dataclasses.dataclass(frozen=True)
class ReproduceOptions:
    """Plan the paper's study as SLURM jobs and submit it (--dry_run: print the plan and its cost)."""

    dry_run: bool = False
    """Print the plan (jobs, resources, dependencies, tokens, GPU-hours, commands); submit nothing."""
    only: list[str] = dataclasses.field(default_factory=list)
    """Runs to plan instead of the six models, as a,b: any of the six and the ablation's backpack-mini-k1, -k4,
    -k16, -k64."""
    ablation: bool = False
    """Add the paper's sense-count ablation: Backpack-Mini with k = 1, 4, 16, 64 senses."""
    ablation_steps: int = ABLATION_STEPS
    """Training steps of each ablation run (the paper's)."""
    data_dir: str = "data/openwebtext"
    """The MDS data (slurm/prep_owt.sh's output): prepared first when it has no dataset.json."""
    runs_dir: str = "runs"
    """Run folders go to RUNS_DIR/<run>; the table and the plot to RUNS_DIR/table2.md and val_loss.png."""
    gpu: str = "H100"
    """The GPU for the GPU-hour estimate where docs/benchmarks.md has no measured throughput."""
    mfu: float = 0.4
    """The MFU assumed for that estimate (open GPT-2-small trainings reach about 38-56%)."""

    def __post_init__(self):
        cli.check_range(self, "ablation_steps", 1)
        cli.check_range(self, "mfu", 0.01, 1)
        try:
            cost.peak_flops(self.gpu)
        except ValueError as e:
            raise cli.UsageError(str(e)) from None


def environment() -> dict[str, str]:
    """What every job gets besides its own settings: the clone and this Python, so that the jobs
    run this code whatever the submit folder."""
    return {"REPO": str(REPO), "PYTHON": os.environ.get("PYTHON") or sys.executable}


def reproduce(options: ReproduceOptions) -> None:
    """Plan the paper's study as SLURM jobs and submit it (--dry_run: print the plan and its cost)."""
    env = os.environ
    try:
        sbatch_args = shlex.split(env.get("SBATCH_ARGS", ""))
    except ValueError as e:
        raise cli.UsageError(f"SBATCH_ARGS: {e}; quote it as one shell word") from None
    pick = lambda *names: {n: env[n] for n in names if env.get(n)}  # noqa: E731 - settings given by the user
    gpus = env.get("GPUS_PER_NODE") or None  # empty counts as unset, as in the scripts (${VAR:-default})
    if gpus is not None and (not gpus.isdigit() or int(gpus) == 0):
        raise cli.UsageError(f"GPUS_PER_NODE={gpus}: use a positive number (training processes per node)")
    plan = planning.build_plan(
        only=options.only, ablation=options.ablation, ablation_steps=options.ablation_steps,
        data_dir=options.data_dir, runs_dir=options.runs_dir, extra_args=env.get("EXTRA_ARGS", ""),
        prep_env=pick("NUM_SHARDS", "PREP_ARGS"), eval_env=pick("TASKS", "EVAL_ARGS"),
        gpus=int(gpus) if gpus else None, gpu=options.gpu, mfu=options.mfu)
    if not options.dry_run and shutil.which("sbatch", path=env.get("PATH")) is None:
        raise cli.UsageError("sbatch not found: submit from a SLURM login node (or --dry_run to see the plan)")
    common = environment()
    print(show.render(plan, sbatch_args, common, options.dry_run), flush=True)
    if options.dry_run:
        return
    print()
    ids = submit(plan, sbatch_args, {**env, **common})
    print(f"submitted {len(ids)} jobs; watch with: squeue --me; the table will be in {plan.runs_dir}/table2.md")


def main(argv=None):
    cli.run(reproduce, sys.argv[1:] if argv is None else argv, name="python -m backpack_dist.reproduce")


if __name__ == "__main__":
    main()
