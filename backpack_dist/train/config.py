"""Run configuration: the paper's recipe as defaults, validated before anything starts."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path

from ..cli import UsageError, check_range
from ..model import MODEL_NAMES, model_config
from ..model.config import ModelOverrides

# Exit status of a run that saved a checkpoint because it was asked to stop (SIGUSR1/SIGTERM):
# EX_TEMPFAIL, "try again later". The SLURM launchers requeue the job on it; clusters can also
# list it in slurm.conf's RequeueExit.
PREEMPTED_EXIT_CODE = 75
# The repository's ZeRO-2 config, found from any working directory.
DEFAULT_DS_CONFIG = str(Path(__file__).resolve().parents[2] / "ds_configs" / "zero2.json")


ConfigError = UsageError  # a configuration that cannot work, found before any process does real work


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(ModelOverrides):
    """Every flag of `python -m backpack_dist.train`; the defaults are the paper's recipe."""

    model: str = "backpack-small"
    """The model: backpack-micro|mini|small or transformer-micro|mini|small."""
    data_dir: str = ""
    """The output folder of `python -m data_prep` (with --remote: the local cache) (required)."""
    run_dir: str = ""
    """The run's folder: checkpoints, metrics and logs; rerunning on it resumes (required)."""
    ds_config: str = DEFAULT_DS_CONFIG
    """A DeepSpeed JSON (ds_configs/zero{0,1,2,3}.json, zero3_offload.json); batch, precision,
    clipping, optimizer and schedule come from these flags."""
    global_batch: int = 1024
    """Sequences per optimizer step; gradient accumulation = global / (micro x processes)."""
    micro_batch: int = 16
    """Sequences per process per forward."""
    max_steps: int = 100_000
    """Optimizer steps of the whole run (a resume may raise it)."""
    lr: float = 6e-4
    """Peak learning rate of AdamW, reached after --warmup_steps; --schedule says what follows."""
    betas: tuple[float, ...] = (0.9, 0.999)
    """AdamW's betas, as 0.9,0.999."""
    eps: float = 1e-8
    """AdamW's epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay, on the matrices of Linear layers only."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    warmup_steps: int | None = None
    """Linear warmup steps; default: 1% of --max_steps (the authors' code), at least 2 (0 allowed but for linear)."""
    schedule: typing.Literal["linear", "cosine", "wsd"] = "linear"
    """After the warmup: linear (the paper's) or cosine decay to --min_lr at --max_steps; wsd: stable at --lr,
    then the last --decay_steps decay to --min_lr in --decay_shape. A resume recomputes the lr from the step with
    the new flags, but a wsd decay that has begun keeps its start: a raised --max_steps extends the run at --min_lr."""
    min_lr: float = 0.0
    """The lr the warmup starts from and the decay ends at."""
    decay_steps: int | None = None
    """wsd only: the decay's length in steps, ending at --max_steps; default: 10% of --max_steps."""
    decay_shape: typing.Literal["linear", "cosine", "sqrt"] = "linear"
    """wsd only: the decay's shape; sqrt is 1 - sqrt(progress), as in the WSD papers."""
    precision: typing.Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
    seed: int = 1337
    """Seeds the initial weights, the data order and dropout."""
    log_every: int = 10
    """Steps between metrics lines."""
    eval_every: int = 1000
    """Steps between validations (and at the last step)."""
    eval_batches: int = 20
    """Validation micro batches in all: the first eval_batches x micro_batch samples of the val
    split (all of it when it holds fewer), the same samples on any number of processes."""
    save_every: int = 1000
    """Steps between checkpoints (and at the last step and on SIGUSR1/SIGTERM)."""
    keep: int = 3
    """Checkpoints kept; older ones are deleted once a newer one is complete."""
    wandb: typing.Literal["online", "offline", "disabled"] = "offline"
    """wandb mode; offline runs are kept in RUN/wandb."""
    wandb_project: str = "backpack-dist"
    """The wandb project."""
    remote: str | None = None
    """Object-store URL of the data-prep output (s3://...); --data_dir is then the local cache."""
    num_canonical_nodes: int = 8
    """streaming's canonical nodes: with the seed they fix the sample order on any number of processes."""
    num_workers: int = 1
    """DataLoader workers per process; one delivers over 10x the tokens/s an H200 trains Transformer-Micro
    on at 50% MFU, shards in the page cache (docs/benchmarks.md)."""
    max_bad_steps: int = 5
    """Stop (exit 3) after this many non-finite steps in a row."""
    sense_sum: str = "auto"
    """The Backpack's sense-sum implementation (model/sense_sum.py); all are exact."""
    loss_impl: str = "auto"
    """The loss implementation (model/loss.py); all are exact."""
    compile: bool = False
    """torch.compile the model (DeepSpeed's engine.compile). ZeRO-0/1/2: the whole forward compiles
    (graph breaks only where the model syncs with the host); ZeRO-3: DeepSpeed's parameter
    gather/release hooks break the graph at every submodule, so little fuses. Off by default until
    a GPU run shows it pays (docs/benchmarks.md)."""
    init_from: str | None = None
    """Start from trained weights (an export, run, checkpoint or transformers folder; its sizes); RUN@STEP is
    RUN's checkpoint of that step. Weights only: AdamW's moments start fresh."""
    probes: bool = True
    """At each validation, record sense probes (each sense's top words for --probe_words; p(she)
    and p(he) after the paper's nurse prompt) in metrics.jsonl and wandb; --noprobes turns them off."""
    probe_words: tuple[str, ...] = (" science", " nurse", " bank")
    """The probe words (a word is read as it appears in running text, " science")."""

    def __post_init__(self):
        """The checks that need nothing but the values; validate() does those that read files."""
        from ..model.loss import LOSS_IMPLEMENTATIONS
        from ..model.sense_sum import SENSE_SUM_IMPLEMENTATIONS

        if self.model not in MODEL_NAMES:
            raise UsageError(f"unknown model {self.model!r}: choose one of {', '.join(MODEL_NAMES)}")
        for name in ("global_batch", "micro_batch", "max_steps", "log_every", "eval_every", "eval_batches",
                     "save_every", "keep", "num_canonical_nodes", "max_bad_steps"):
            check_range(self, name, low=1)
        for name in ("num_workers", "lr", "eps", "weight_decay", "grad_clip"):
            check_range(self, name, low=0)
        if len(self.betas) != 2:
            raise UsageError(f"--betas {','.join(map(str, self.betas))}: expected two numbers as 0.9,0.95")
        # linear keeps WarmupDecayLR's rule (2 steps or more); a WSD decay branch may start at peak.
        low = 2 if self.schedule == "linear" else 0
        if self.warmup_steps is not None and not low <= self.warmup_steps <= self.max_steps:
            raise UsageError(f"--warmup_steps must be from {low} (DeepSpeed's WarmupDecayLR warms up over 2 steps or "
                             f"more; --schedule cosine or wsd from 0) to --max_steps {self.max_steps}, "
                             f"got {self.warmup_steps}")
        self.check_schedule()
        try:
            self.check_overrides()
        except ValueError as e:
            raise UsageError(str(e)) from None
        if self.sense_sum not in SENSE_SUM_IMPLEMENTATIONS:
            raise UsageError(f"--sense_sum {self.sense_sum!r}: use one of {', '.join(SENSE_SUM_IMPLEMENTATIONS)}")
        if self.loss_impl not in LOSS_IMPLEMENTATIONS:
            raise UsageError(f"--loss_impl {self.loss_impl!r}: use one of {', '.join(LOSS_IMPLEMENTATIONS)}")

    def check_schedule(self) -> None:
        check_range(self, "min_lr", low=0)
        if self.min_lr > self.lr:
            raise UsageError(f"--min_lr {self.min_lr} is above the peak --lr {self.lr}; lower it")
        if self.schedule != "wsd" and (self.decay_steps is not None or self.decay_shape != "linear"):
            raise UsageError(f"--decay_steps and --decay_shape belong to --schedule wsd, not {self.schedule}; "
                             "drop them")
        if self.decay_steps is not None:
            check_range(self, "decay_steps", low=1)
        if self.schedule == "wsd" and self.resolved_warmup_steps + self.resolved_decay_steps > self.max_steps:
            raise UsageError(f"--warmup_steps {self.resolved_warmup_steps} + --decay_steps {self.resolved_decay_steps} "
                             f"exceed --max_steps {self.max_steps}; shorten them or raise --max_steps")

    @property
    def resolved_decay_steps(self) -> int:
        return self.decay_steps if self.decay_steps is not None else max(1, self.max_steps // 10)

    @property
    def resolved_warmup_steps(self) -> int:
        # DeepSpeed's WarmupDecayLR warms up over at least 2 steps (it raises 1 to 2 silently).
        return self.warmup_steps if self.warmup_steps is not None else max(2, self.max_steps // 100)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def grad_accumulation_steps(global_batch: int, micro_batch: int, world_size: int) -> int:
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ConfigError(
            f"global batch {global_batch} is not divisible by micro batch {micro_batch} x {world_size} processes; "
            f"choose --global_batch as a multiple of {per_step} or change --micro_batch")
    return global_batch // per_step


def validate(cfg: TrainConfig, world_size: int) -> None:
    """Every check that needs no data loading: fail at start with the fix in the message."""
    from .init_from import check_init_flags

    check_init_flags(cfg)  # before the sizes' own checks: with --init_from they are not wanted at all
    try:
        model_config(cfg.model, **cfg.model_overrides)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not cfg.run_dir:
        raise ConfigError("--run_dir is required: the folder for checkpoints, metrics and logs")
    if not cfg.data_dir:
        raise ConfigError("--data_dir is required: the output folder of `python -m data_prep`")
    if cfg.remote is None and not Path(cfg.data_dir, "train").is_dir():
        raise ConfigError(f"data dir {cfg.data_dir} has no train/ split; prepare it with `python -m data_prep text "
                          f"--input ... --out_dir {cfg.data_dir}` (an array of jobs: then `merge`)")
    if not os.path.isfile(cfg.ds_config):
        raise ConfigError(f"DeepSpeed config {cfg.ds_config} not found; use one of ds_configs/zero*.json")
    if Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        raise ConfigError(f"--run_dir {cfg.run_dir} is a file; pass a folder")
    load_ds_config(cfg.ds_config)  # valid JSON
    grad_accumulation_steps(cfg.global_batch, cfg.micro_batch, world_size)


def check_data_fits_run(dataset_info: dict, micro_batch: int, world_size: int, num_canonical_nodes: int) -> None:
    """Too little data would leave some process without a full micro batch, and the loader spinning."""
    samples = dataset_info["splits"]["train"]["samples"]
    if samples < max(micro_batch * world_size, num_canonical_nodes):
        raise ConfigError(
            f"the data has {samples} training samples, fewer than one micro batch per process ({micro_batch} x "
            f"{world_size}) or than --num_canonical_nodes {num_canonical_nodes}; prepare more data or lower them")


def check_data_fits_model(dataset_info: dict, model_vocab: int, model_seq_len: int) -> None:
    if dataset_info["vocab_size"] > model_vocab:
        raise ConfigError(
            f"the data's vocabulary ({dataset_info['vocab_size']} ids) is larger than the model's ({model_vocab}); "
            f"pass --vocab_size {dataset_info['vocab_size']} or prepare the data with the model's tokenizer")
    if dataset_info["seq_len"] > model_seq_len:
        raise ConfigError(
            f"the data was cut into sequences of {dataset_info['seq_len']} tokens but the model's context is only "
            f"{model_seq_len}; pass --seq_len {dataset_info['seq_len']} or re-run data prep with a smaller --seq_len")


def load_ds_config(path: str) -> dict:
    try:
        config = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"DeepSpeed config {path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"DeepSpeed config {path} is not a JSON object; start from ds_configs/zero2.json")
    return config
