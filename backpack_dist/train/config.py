"""Run configuration: the paper's recipe as defaults, validated before anything starts."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ..model import MODEL_NAMES, model_config

# Exit status of a run that saved a checkpoint because it was asked to stop (SIGUSR1/SIGTERM):
# EX_TEMPFAIL, "try again later". The SLURM launchers requeue the job on it; clusters can also
# list it in slurm.conf's RequeueExit.
PREEMPTED_EXIT_CODE = 75
# The repository's ZeRO-2 config, found from any working directory.
DEFAULT_DS_CONFIG = str(Path(__file__).resolve().parents[2] / "ds_configs" / "zero2.json")


class ConfigError(ValueError):
    """A configuration that cannot work; raised before any process does real work."""


@dataclasses.dataclass
class TrainConfig:
    model: str = "backpack-small"
    data_dir: str = ""
    run_dir: str = ""
    ds_config: str = DEFAULT_DS_CONFIG
    # Batch: global batch in sequences; gradient accumulation = global / (micro * world).
    global_batch: int = 1024
    micro_batch: int = 16
    max_steps: int = 100_000
    # AdamW with decoupled weight decay on matrices only; linear warmup then linear decay to 0.
    lr: float = 6e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_steps: int | None = None  # default: 1% of max_steps (the authors' code), at least 2
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    seed: int = 1337
    # Observability and checkpoints.
    log_every: int = 10
    eval_every: int = 1000
    eval_batches: int = 20
    save_every: int = 1000
    keep: int = 3
    wandb: str = "offline"
    wandb_project: str = "backpack-dist"
    # Data loading.
    remote: str | None = None  # object-store URL of the data-prep output; data_dir is then the local cache
    num_canonical_nodes: int = 8
    num_workers: int = 1
    max_bad_steps: int = 5  # stop after this many non-finite steps in a row
    # Exact implementation choices (model/sense_sum.py, model/loss.py) and torch.compile.
    sense_sum: str = "auto"
    loss_impl: str = "auto"
    compile: bool = False
    # Trained weights to start from (an export, run, checkpoint or transformers folder; its sizes).
    init_from: str | None = None
    # Model overrides for tiny runs.
    d_model: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    n_senses: int | None = None
    vocab_size: int | None = None
    seq_len: int | None = None
    dropout: float | None = None

    @property
    def model_overrides(self) -> dict:
        keys = ("d_model", "n_layer", "n_head", "n_senses", "vocab_size", "seq_len", "dropout")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

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


def check_types(cfg: TrainConfig) -> None:
    """fire passes what it cannot parse as a number on as text: name the flag instead of failing later."""
    for field in dataclasses.fields(cfg):
        value, kind = getattr(cfg, field.name), str(field.type)
        if value is None and "None" in kind:
            continue
        if kind.startswith("int"):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind.startswith("float"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind.startswith("bool"):
            ok = isinstance(value, bool)
        elif kind.startswith("str"):
            ok = isinstance(value, str)
        else:  # betas
            numbers = isinstance(value, (tuple, list)) and all(isinstance(b, (int, float)) for b in value)
            ok = numbers and len(value) == 2
        if not ok:
            wanted = "two numbers as 0.9,0.95" if field.name == "betas" else kind.replace(" | None", "")
            raise ConfigError(f"--{field.name} {value!r}: expected {wanted}")


def validate(cfg: TrainConfig, world_size: int) -> None:
    """Every check that needs no data loading: fail at start with the fix in the message."""
    check_types(cfg)
    if cfg.model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {cfg.model!r}: choose one of {', '.join(MODEL_NAMES)}")
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
        raise ConfigError(f"data dir {cfg.data_dir} has no train/ split; prepare it with "
                          f"`python -m data_prep text --input ... --out_dir {cfg.data_dir}` and `merge`")
    if not os.path.isfile(cfg.ds_config):
        raise ConfigError(f"DeepSpeed config {cfg.ds_config} not found; use one of ds_configs/zero*.json")
    if Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        raise ConfigError(f"--run_dir {cfg.run_dir} is a file; pass a folder")
    load_ds_config(cfg.ds_config)  # valid JSON
    for name in ("global_batch", "micro_batch", "max_steps", "log_every", "eval_every", "eval_batches", "save_every",
                 "keep", "num_canonical_nodes", "max_bad_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("num_workers", "lr", "eps", "weight_decay", "grad_clip"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.warmup_steps is not None and not 2 <= cfg.warmup_steps <= cfg.max_steps:
        raise ConfigError(f"--warmup_steps must be from 2 (DeepSpeed's WarmupDecayLR warms up over 2 steps or more) "
                          f"to --max_steps {cfg.max_steps}, got {cfg.warmup_steps}")
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"--precision {cfg.precision!r}: use auto, bf16 or fp32")
    if cfg.wandb not in ("online", "offline", "disabled"):
        raise ConfigError(f"--wandb {cfg.wandb!r}: use online, offline or disabled")
    from ..model.loss import LOSS_IMPLEMENTATIONS
    from ..model.sense_sum import SENSE_SUM_IMPLEMENTATIONS

    if cfg.sense_sum not in SENSE_SUM_IMPLEMENTATIONS:
        raise ConfigError(f"--sense_sum {cfg.sense_sum!r}: use one of {', '.join(SENSE_SUM_IMPLEMENTATIONS)}")
    if cfg.loss_impl not in LOSS_IMPLEMENTATIONS:
        raise ConfigError(f"--loss_impl {cfg.loss_impl!r}: use one of {', '.join(LOSS_IMPLEMENTATIONS)}")
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
