"""The study as data: one list of Job records in submission order, each with its script, settings,
dependencies, resources, tokens and cost. Dry-run printing and submission both read this list.

The runs come from the existing tables: the six models of model/config.py with the paper's recipe
(configs/MODEL.toml, which slurm/train_*.sh read too), and the sense-count ablation of eval/results.py
(Backpack-Mini with each k of the paper, at its step count)."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from .. import checkpoint
from ..cli import UsageError, parse_options
from ..eval.results import ABLATION_MODEL, PAPER_ABLATION
from ..model.config import MODEL_NAMES, model_config
from ..train.config import TrainConfig, grad_accumulation_steps
from . import cost
from .slurm import REPO, gpus_per_node, merge_flags, sbatch_defaults, shell_default

RECIPES = REPO / "configs"  # one TOML file per model: the paper's recipe
# The study sets these per run; EXTRA_ARGS may not.
PER_RUN_FLAGS = ("model", "data_dir", "run_dir", "ds_config")


def ablation_runs() -> dict[str, int]:
    """run name -> k for the paper's sense-count ablation."""
    return {f"{ABLATION_MODEL}-k{k}": k for k in PAPER_ABLATION}


RUN_NAMES = (*MODEL_NAMES, *ablation_runs())


@dataclasses.dataclass(frozen=True)
class Job:
    name: str  # unique in the plan; also the SLURM job name
    kind: str  # prep | merge | train | eval | table
    script: str  # in slurm/
    args: tuple[str, ...] = ()  # the script's arguments
    env: dict = dataclasses.field(default_factory=dict)  # the script's settings (environment variables)
    after: tuple[str, ...] = ()  # jobs that must have succeeded first (afterok)
    nodes: int = 1
    gpus_per_node: int = 0
    cpus: int | None = None  # per task of a CPU job
    array: int | None = None  # tasks of an array job
    time_limit: str = ""  # per start; trainings and evals requeue and resume past it
    tokens: int | None = None  # training tokens
    estimate: cost.Estimate | None = None
    merged_by: str | None = None  # prep: the merge job that its script submits with it


@dataclasses.dataclass(frozen=True)
class Plan:
    jobs: list[Job]
    data_dir: Path
    data_ready: bool
    runs_dir: Path
    gpu: str

    @property
    def trainings(self) -> list[Job]:
        return [j for j in self.jobs if j.kind == "train"]


def selected_runs(only: list[str], ablation: bool) -> list[str]:
    """The run names to plan: the six models (and the ablation with --ablation), or --only's."""
    unknown = [name for name in only if name not in RUN_NAMES]
    if unknown:
        raise UsageError(f"--only: unknown run {unknown[0]!r}; choose from {', '.join(RUN_NAMES)}")
    if only:
        return [name for name in RUN_NAMES if name in only]  # the study's order, each once
    return [*MODEL_NAMES, *(ablation_runs() if ablation else ())]


def base_config(extra_args: str) -> TrainConfig:
    """The EXTRA_ARGS flags (every training gets them, over its recipe file) on the defaults, checked."""
    if any(token.split("=")[0] == "--config" for token in extra_args.split()):
        raise UsageError("EXTRA_ARGS sets --config; the study reads each run's recipe from configs/MODEL.toml "
                         "(edit it there, or pass flags)")
    try:
        config = parse_options(TrainConfig, shlex.split(extra_args))
    except UsageError as e:
        raise UsageError(f"EXTRA_ARGS: {e}") from None
    except ValueError as e:  # unbalanced quotes
        raise UsageError(f"EXTRA_ARGS: {e}; quote it as one shell word") from None
    set_here = [f for f in PER_RUN_FLAGS if getattr(config, f) != getattr(TrainConfig(), f)]
    if set_here:
        raise UsageError(f"EXTRA_ARGS sets --{set_here[0]}, which the study sets per run; use --data_dir / "
                         "--runs_dir of the study (DeepSpeed configs: DS_CONFIG)")
    return config


def recipe_file(model: str) -> Path:
    """configs/MODEL.toml: the paper's recipe for a model, which slurm/train_*.sh read too."""
    return RECIPES / f"{model}.toml"


def recipe(model: str) -> TrainConfig:
    return parse_options(TrainConfig, ["--config", str(recipe_file(model))])


def run_model(name: str) -> str:
    return ABLATION_MODEL if name in ablation_runs() else name


def run_config(name: str, extra_args: str, ablation_steps: int) -> TrainConfig:
    """One run's training config: a model's recipe file with EXTRA_ARGS on top, or the ablation's
    Mini with k senses."""
    base_config(extra_args)  # EXTRA_ARGS's own checks
    config = parse_options(TrainConfig, ["--config", str(recipe_file(run_model(name))), *shlex.split(extra_args)])
    ablation = ablation_runs()
    if name in ablation:
        config = dataclasses.replace(config, n_senses=ablation[name], max_steps=ablation_steps)
    try:
        model_config(config.model, **config.model_overrides)
    except ValueError as e:
        raise UsageError(f"{name}: {e}; change EXTRA_ARGS") from None
    return config


def train_flags(config: TrainConfig) -> str:
    """EXTRA_ARGS for one training job: every flag that differs from its recipe file."""
    default = recipe(config.model)
    flags = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if field.name in PER_RUN_FLAGS or value == getattr(default, field.name):
            continue
        shown = (",".join(map(str, value)) if isinstance(value, (tuple, list)) else
                 str(value).lower() if isinstance(value, bool) or value is None else str(value))
        flags += [f"--{field.name}", shown]
    return shlex.join(flags)


def build_plan(*, only: list[str], ablation: bool, ablation_steps: int, data_dir: str, runs_dir: str,
               extra_args: str, prep_env: dict[str, str], eval_env: dict[str, str], gpus: int | None, gpu: str,
               mfu: float) -> Plan:
    data = Path(data_dir).absolute()
    runs = Path(runs_dir).absolute()
    names = selected_runs(only, ablation)
    jobs: list[Job] = []
    ready = (data / "dataset.json").is_file()  # written by the merge: the data is complete
    data_after: tuple[str, ...] = ()
    if not ready:
        shards = int(prep_env.get("NUM_SHARDS") or shell_default("prep_owt.sh", "NUM_SHARDS"))
        prep, merge = sbatch_defaults("prep_owt.sh"), merge_flags()
        jobs.append(Job("prep-owt", "prep", "prep_owt.sh", env={**prep_env, "OUT_DIR": str(data)},
                        cpus=int(prep["cpus-per-task"]), array=shards, time_limit=prep["time"],
                        merged_by="prep-owt-merge"))
        jobs.append(Job("prep-owt-merge", "merge", "prep_owt.sh", ("merge",), env={"OUT_DIR": str(data)},
                        after=("prep-owt",), cpus=int(merge["cpus-per-task"]), time_limit=merge["time"]))
        data_after = ("prep-owt-merge",)
    evals = []
    for name in names:
        config = run_config(name, extra_args, ablation_steps)
        family, size = config.model.split("-")
        script = f"train_{size}.sh"
        per_node = gpus or int(shell_default("lib/train_job.sh", "GPUS_PER_NODE"))
        nodes = int(sbatch_defaults(script)["nodes"])
        try:  # what training checks at start, said before the job waits in the queue
            grad_accumulation_steps(config.global_batch, config.micro_batch, nodes * per_node)
        except ValueError as e:
            raise UsageError(f"{name} on {nodes} node(s) x {per_node} GPUs: {e}") from None
        model = model_config(config.model, **config.model_overrides)
        tokens = config.max_steps * config.global_batch * model.seq_len
        run_dir = runs / name
        jobs.append(Job(f"train-{name}", "train", script,
                        env={"FAMILY": family, "CONFIG": str(recipe_file(config.model)), "RUN_DIR": str(run_dir),
                             "DATA_DIR": str(data),
                             "EXTRA_ARGS": train_flags(config), "GPUS_PER_NODE": str(per_node)},
                        after=data_after, nodes=nodes, gpus_per_node=per_node,
                        time_limit=sbatch_defaults(script)["time"], tokens=tokens,
                        estimate=cost.estimate(config.model, model, tokens, gpu, mfu)))
        final = checkpoint.tag_for_step(config.max_steps)
        jobs.append(Job(f"eval-{name}", "eval", "eval.sh",
                        env={**eval_env, "RUN_DIR": str(run_dir), "DATA_DIR": str(data),
                             "STEPS": str(config.max_steps)},
                        after=(f"train-{name}",), gpus_per_node=gpus_per_node("eval.sh"),
                        time_limit=sbatch_defaults("eval.sh")["time"]))
        evals.append((f"eval-{name}", str(run_dir / "eval" / f"{final}.json")))
    table = sbatch_defaults("table.sh")
    jobs.append(Job("table2", "table", "table.sh", tuple(path for _, path in evals), env={"OUT_DIR": str(runs)},
                    after=tuple(name for name, _ in evals), cpus=int(table["cpus-per-task"]), time_limit=table["time"]))
    # Trainings before evals, so that `squeue` lists the study in the order it runs.
    order = {"prep": 0, "merge": 1, "train": 2, "eval": 3, "table": 4}
    jobs.sort(key=lambda j: order[j.kind])
    return Plan(jobs=jobs, data_dir=data, data_ready=ready, runs_dir=runs, gpu=gpu)
