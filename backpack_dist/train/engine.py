"""Parallelism: process-group setup and the DeepSpeed engine (ZeRO stage from the JSON config,
batch, precision, optimizer and schedule from the command line)."""

from __future__ import annotations

import os
import socket

import torch
from torch import nn

from ..cli import UsageError
from .config import TrainConfig, grad_accumulation_steps
from .schedule import LRSchedule, Schedule


def free_port() -> int:
    """A free local port for a process group's rendezvous (a fixed one, like DeepSpeed's default
    29500, fails when another job on the machine holds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> None:
    """Join the process group set up by deepspeed/torchrun/srun, or make a world of one."""
    import deepspeed

    if "RANK" not in os.environ:  # a plain `python -m backpack_dist.train`
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    # mosaicml-streaming reads LOCAL_WORLD_SIZE to know which ranks share a node; the deepspeed
    # launcher does not set it.
    if "LOCAL_WORLD_SIZE" not in os.environ:
        os.environ["LOCAL_WORLD_SIZE"] = str(torch.cuda.device_count() if torch.cuda.is_available()
                                             else os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        # On CPU DeepSpeed JIT-compiles a shared-memory all-reduce at start-up that only its
        # inference path uses; concurrent runs race on that build (and sometimes fail), so skip it.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def use_bf16(cfg: TrainConfig) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_available())


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices of Linear layers only: no decay on biases, LayerNorms or embeddings."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def deepspeed_config(base: dict, cfg: TrainConfig, world_size: int) -> dict:
    """The user's ZeRO JSON with every field that the command line owns filled in."""
    ds = dict(base)
    ds["train_micro_batch_size_per_gpu"] = cfg.micro_batch
    ds["gradient_accumulation_steps"] = grad_accumulation_steps(cfg.global_batch, cfg.micro_batch, world_size)
    ds["train_batch_size"] = cfg.global_batch
    ds["gradient_clipping"] = cfg.grad_clip
    ds["zero_allow_untested_optimizer"] = True  # our AdamW subclass below
    ds["bf16"] = {"enabled": use_bf16(cfg)}
    ds["data_types"] = {**ds.get("data_types", {}), **grad_accum_dtype(ds, use_bf16(cfg))}
    ds.pop("scheduler", None)  # ours (schedule.py), given to deepspeed.initialize
    if "optimizer" in ds:  # e.g. ZeRO-Offload, which needs DeepSpeed's CPU Adam
        ds["optimizer"] = {"type": ds["optimizer"].get("type", "AdamW"),
                           "params": {"lr": cfg.lr, "betas": list(cfg.betas), "eps": cfg.eps,
                                      "weight_decay": cfg.weight_decay}}
    return ds


def grad_accum_dtype(ds: dict, bf16: bool) -> dict:
    """{"grad_accum_dtype": "fp32"} where DeepSpeed can accumulate bf16 gradients in fp32 and we
    can still read its checkpoints, else {}.

    With bf16 weights DeepSpeed accumulates in the weights' dtype unless told otherwise
    (engine.py get_data_types): gradient_accumulation_steps micro batches summed in bf16 (8 at the
    paper's batch on 8 GPUs). fp32 gives ZeRO-2 and ZeRO-3 (with or without offload) an fp32
    gradient partition. ZeRO-1 is left in bf16: its fp32 path swaps in BF16_Optimizer, whose
    checkpoints DeepSpeed's zero_to_fp32 (our export and load) cannot read. ZeRO-0 with bf16 has no
    fp32 accumulation at all. A grad_accum_dtype in the user's JSON is kept. docs/benchmarks.md
    has the source lines."""
    from .run_dir import zero_stage  # run_dir imports this module

    explicit = ds.get("data_types", {}).get("grad_accum_dtype")
    if explicit is not None:
        if bf16 and zero_stage(ds) == 0 and explicit == "fp32":
            raise UsageError("ZeRO stage 0 with bf16 cannot accumulate gradients in fp32 (DeepSpeed 0.19 has no "
                             "such optimizer): remove data_types.grad_accum_dtype or use ds_configs/zero1.json")
        return {}
    return {"grad_accum_dtype": "fp32"} if bf16 and zero_stage(ds) >= 2 else {}


class GuardedAdamW(torch.optim.AdamW):
    """torch's AdamW that skips an update whose gradients are not all finite on every rank.

    DeepSpeed's ZeRO and bf16 wrappers skip such a step themselves (an invalid gradient norm);
    with ZeRO-0 in fp32 DeepSpeed calls this optimizer directly, so the check is made here and
    reported as DeepSpeed's `overflow`: the engine then treats it as its own skipped step (not
    applied, `skipped_steps` counted, the lr schedule held)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.overflow = False

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        device = grads[0].device if grads else torch.device("cpu")
        # One device-to-host sync for all the gradients, not one per tensor.
        finite = torch.stack([g.isfinite().all() for g in grads] or [torch.ones((), dtype=torch.bool)]).all()
        finite = finite.float().to(device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        self.overflow = finite.item() < 1
        if self.overflow:
            return None
        return super().step(closure)


def build_engine(model: nn.Module, cfg: TrainConfig, ds_base: dict, world_size: int):
    import deepspeed

    ds = deepspeed_config(ds_base, cfg, world_size)
    groups = weight_decay_groups(model, cfg.weight_decay)
    optimizer = None
    if "optimizer" not in ds:
        fused = torch.cuda.is_available()
        optimizer = GuardedAdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)
    schedule = Schedule.from_config(cfg)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=groups, optimizer=optimizer, config=ds,
        lr_scheduler=lambda opt: LRSchedule(opt, schedule))  # a factory: with ZeRO-Offload DeepSpeed builds opt
    if ds.get("zero_optimization", {}).get("stage", 0) == 3:
        # The tied embedding is used as the output layer outside its own module's forward.
        deepspeed.zero.register_external_parameter(engine.module, engine.module.wte.weight)
    return engine, optimizer, scheduler
