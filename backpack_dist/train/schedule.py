"""The learning-rate schedules: linear (the paper's), cosine and WSD (warmup-stable-decay).

lr_at() is the one place an lr is computed; LRSchedule hands it to DeepSpeed, which steps it after
every applied optimizer step (a skipped step holds it). The iteration t is 0-based: step s of a run
trains at t = s - 1 (minus any skipped steps). Every schedule warms up linearly from --min_lr to
--lr over --warmup_steps, then moves a factor g from 1 to 0: lr = min_lr + (lr - min_lr) * g. The
linear schedule is DeepSpeed's WarmupDecayLR to the float (today's runs and checkpoints unchanged).

On a resume the lr is recomputed from the checkpoint's iteration with the new flags (a resume may
change --max_steps, --lr or the schedule), with one exception: a WSD decay that has begun keeps its
recorded start, so raising --max_steps never re-stretches it (the decay ends where it would have,
and the lr then stays at --min_lr up to the new --max_steps)."""

from __future__ import annotations

import dataclasses
import math

from torch.optim.lr_scheduler import LRScheduler

SCHEDULES = ("linear", "cosine", "wsd")
DECAY_SHAPES = ("linear", "cosine", "sqrt")


@dataclasses.dataclass(frozen=True)
class Schedule:
    kind: str
    peak: float
    min_lr: float
    warmup: int
    total: int
    decay_start: int | None = None  # wsd: the first iteration of the decay
    decay_steps: int = 0
    decay_shape: str = "linear"

    @classmethod
    def from_config(cls, cfg) -> Schedule:
        decay_start = cfg.max_steps - cfg.resolved_decay_steps if cfg.schedule == "wsd" else None
        return cls(cfg.schedule, cfg.lr, cfg.min_lr, cfg.resolved_warmup_steps, cfg.max_steps, decay_start,
                   cfg.resolved_decay_steps if cfg.schedule == "wsd" else 0, cfg.decay_shape)

    def resumed(self, iteration: int, saved_decay_start: int | None) -> Schedule:
        """This schedule for a run resumed at `iteration`: a WSD decay already begun keeps its start."""
        if self.kind == "wsd" and saved_decay_start is not None and iteration >= saved_decay_start:
            return dataclasses.replace(self, decay_start=saved_decay_start)
        return self


def shape_factor(shape: str, progress: float) -> float:
    """From 1 at progress 0 to 0 at progress 1; sqrt is WSD's 1 - sqrt (torchtitan's, MiniCPM's)."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - math.sqrt(progress)


def factor(s: Schedule, t: int) -> float:
    """g(t) in [0, 1]: lr = min_lr + (peak - min_lr) * g."""
    if t < s.warmup:
        return t / s.warmup
    if s.kind == "linear":  # WarmupDecayLR's expression, kept as it is for bit-identical floats
        return max(0.0, float(s.total - t) / float(max(1.0, s.total - s.warmup)))
    if s.kind == "cosine":
        return shape_factor("cosine", min(1.0, (t - s.warmup) / max(1, s.total - s.warmup)))
    if t < s.decay_start:
        return 1.0
    return shape_factor(s.decay_shape, min(1.0, (t - s.decay_start) / max(1, s.decay_steps)))


def lr_at(s: Schedule, t: int) -> float:
    """The lr of iteration t (0-based) under schedule s."""
    return s.min_lr + (s.peak - s.min_lr) * factor(s, t)


class LRSchedule(LRScheduler):
    """lr_at() as a torch scheduler for deepspeed.initialize(lr_scheduler=...). Its state is the
    iteration (WarmupDecayLR's key, so checkpoints of either load into the other) and a WSD decay's
    start; the rest comes from the flags of the run that loads it."""

    def __init__(self, optimizer, schedule: Schedule):
        self.schedule = schedule
        super().__init__(optimizer)  # its first step: iteration 0, lr_at(0) in the param groups

    def get_lr(self) -> list[float]:
        return [lr_at(self.schedule, self.last_epoch)] * len(self.optimizer.param_groups)

    def state_dict(self) -> dict:
        return {"last_batch_iteration": self.last_epoch, "decay_start": self.schedule.decay_start}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = state["last_batch_iteration"]
        self.schedule = self.schedule.resumed(self.last_epoch, state.get("decay_start"))
        self._last_lr = self.get_lr()
