"""GPU-hours of a training run: from the measured throughput in docs/benchmarks.md when it has a
figure for the model, else from an assumed MFU of the GPU's bf16 peak and the model's training
FLOPs per token (backpack_dist/model/flops.py), and the plan says which."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ..model.config import ModelConfig
from ..model.flops import training_flops_per_token
from ..train.metrics import PEAK_BF16_FLOPS

BENCHMARKS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


@dataclasses.dataclass(frozen=True)
class Estimate:
    gpu_hours: float
    measured: bool
    basis: str  # where the throughput comes from, in words


def measured_throughput(model: str, path: Path = BENCHMARKS) -> tuple[float, str] | None:
    """(tokens/s on one GPU, its source) from the 'Results on a GPU' table, or None while that
    table reads 'not yet measured' for the model."""
    try:
        text = path.read_text()
    except OSError:
        return None
    section = text.split("## Results on a GPU", 1)[-1].split("\n## ", 1)[0] if "## Results on a GPU" in text else ""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]
    if not rows:
        return None
    header = [h.lower() for h in rows[0]]
    if not {"model", "tokens/s", "device"} <= set(header):
        return None
    for row in rows[1:]:
        cells = dict(zip(header, row, strict=False))
        names = [n.strip() for n in cells.get("model", "").split(",")]
        number = re.fullmatch(r"[\d,]+(?:\.\d+)?", cells.get("tokens/s", "").replace(" ", ""))
        if model in names and number and (cells.get("implementation") in (None, "", "defaults")):
            return float(number[0].replace(",", "")), f"measured {cells['tokens/s']} tokens/s on one " \
                                                     f"{cells['device']} ({cells.get('date', '?')}, docs/benchmarks.md)"
    return None


def peak_flops(gpu: str) -> float:
    for name, peak in PEAK_BF16_FLOPS:
        if name.lower() == gpu.lower():
            return peak
    raise ValueError(f"--gpu {gpu}: no bf16 peak known for it; choose one of "
                     f"{', '.join(name for name, _ in PEAK_BF16_FLOPS)}")


def estimate(model: str, config: ModelConfig, tokens: int, gpu: str, mfu: float,
             benchmarks: Path = BENCHMARKS) -> Estimate:
    measured = measured_throughput(model, benchmarks)
    if measured:
        tokens_per_s, source = measured
        return Estimate(tokens / tokens_per_s / 3600, True, source)
    peak = peak_flops(gpu)
    seconds = tokens * training_flops_per_token(config) / (mfu * peak)
    return Estimate(seconds / 3600, False,
                    f"throughput not yet measured (docs/benchmarks.md); assumes {mfu:.0%} MFU of one {gpu}'s "
                    f"{peak / 1e12:.0f} TFLOP/s bf16 peak with training_flops_per_token of "
                    "backpack_dist/model/flops.py (3 x forward, the sense network once per position)")
