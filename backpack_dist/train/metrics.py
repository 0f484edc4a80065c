"""What a run reports: metrics.jsonl lines, wandb, and MFU against the device's real peak."""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from pathlib import Path

import torch

from .. import atomic

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets. The most
# specific name comes first.
PEAK_BF16_FLOPS = [
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12),
    ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12), ("MI300X", 1307e12),
    ("MI250X", 383e12),
]


def device_peak_flops() -> float | None:
    """Peak bf16 FLOP/s of this process's GPU, or None (CPU, unknown device): then no MFU."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, peak in PEAK_BF16_FLOPS:
        if key in name:
            return peak
    return None


class Throughput:
    """Tokens/s and model FLOPs utilisation over the steps since the last metrics line."""

    def __init__(self, peak_flops: float | None, world_size: int):
        self.peak, self.world = peak_flops, world_size
        self.reset()

    def reset(self) -> None:
        self.start, self.tokens, self.flops = time.perf_counter(), 0, 0.0

    def add(self, tokens: int, flops: float) -> None:
        self.tokens += tokens
        self.flops += flops

    def figures(self) -> dict:
        elapsed = time.perf_counter() - self.start
        mfu = (self.flops / elapsed) / (self.peak * self.world) if self.peak else None
        return {"tokens_per_s": self.tokens / elapsed, "mfu": mfu}


class MetricsLog:
    """Rank 0's record of a run: RUN/metrics.jsonl plus wandb (online, offline or disabled)."""

    def __init__(self, run_dir, *, wandb_mode: str, project: str, config: dict, resume_step: int):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._drop_lines_after(resume_step)
        self.wandb = None
        if wandb_mode != "disabled":
            import wandb

            id_file = Path(run_dir) / "wandb_id"
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
            id_file.write_text(run_id + "\n")
            self.wandb = wandb.init(project=project, id=run_id, resume="allow", mode=wandb_mode, dir=str(run_dir),
                                    config=config, name=Path(run_dir).name)

    def _drop_lines_after(self, step: int) -> None:
        """A run killed after its last checkpoint logged steps it will now redo: forget them so
        metrics.jsonl holds each step once."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines(keepends=True) if _step_of(line) <= step]
        atomic.write_text(self.path, "".join(kept))

    def log(self, record: dict) -> None:
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self._to_wandb("log", self._wandb_values(record), step=record["step"])

    def _wandb_values(self, record: dict) -> dict:
        """The record for wandb: numbers as they are, sense probes as a table (word, sense, top
        words) and the probe's pronoun probabilities as numbers."""
        values = {k: v for k, v in record.items() if k not in ("step", "probes") and v is not None}
        probes = record.get("probes")
        if probes:
            import wandb

            rows = [[word, sense, " ".join(top)] for word, senses in probes.get("senses", {}).items()
                    for sense, top in enumerate(senses)]
            if rows:
                values["probes/senses"] = wandb.Table(columns=["word", "sense", "top words"], data=rows)
            values.update({f"probes/p({p.strip()})": v for p, v in probes.get("pronouns", {}).items()})
        return values

    def _to_wandb(self, method: str, *args, **kwargs) -> None:
        """wandb is a copy of metrics.jsonl: when its service is gone (Slurm's SIGTERM reaches it
        too) the run goes on, saves and stops as asked, instead of dying on a lost connection."""
        try:
            getattr(self.wandb, method)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any wandb failure
            print(f"warning: wandb stopped working ({type(e).__name__}: {e}); metrics.jsonl goes on",
                  file=sys.stderr, flush=True)
            self.wandb = None

    def close(self) -> None:
        if self.wandb is not None:
            self._to_wandb("finish")


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a torn last line (killed mid-write) counts as after any
    step, so it is dropped."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
