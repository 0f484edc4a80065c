"""python -m backpack_dist.plot RUN... --out loss.png: validation loss against tokens seen for
several training runs, one panel per model size, coloured by family (Backpack, Transformer).

A run's RUN/metrics.jsonl has `val_loss` lines (with their step) and training lines (with
`tokens_seen`); a validation's token count is the training line's of the same step, else its
step times the run's tokens per step (constant within a run: global batch x sequence length)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from . import cli
from .model.config import MODEL_NAMES, SIZES

COLOURS = {"backpack": "tab:blue", "transformer": "tab:orange"}
STYLES = ["-", "--", ":", "-."]  # several runs of one family in one panel (e.g. the sense-count ablation)


@dataclasses.dataclass
class Curve:
    label: str
    family: str  # backpack, transformer or "other"
    size: str  # micro, mini, small or "other"
    tokens: list[int]
    val_loss: list[float]


def read_curve(run) -> Curve:
    """The validation curve of one run dir; UsageError naming the run when it has none."""
    run = Path(run)
    metrics = run / "metrics.jsonl"
    if not run.is_dir():
        raise cli.UsageError(f"{run}: no such run folder; pass training run directories (RUN with metrics.jsonl)")
    if not metrics.is_file():
        raise cli.UsageError(f"{run} has no metrics.jsonl; is it a training run directory (--run_dir of training)?")
    try:
        text = metrics.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise cli.UsageError(f"cannot read {metrics}: {e.strerror}") from None
    train_tokens, val = {}, {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a killed run
        if isinstance(record.get("tokens_seen"), int):
            train_tokens[step] = record["tokens_seen"]
        if isinstance(record.get("val_loss"), (int, float)):
            val[step] = float(record["val_loss"])  # a resumed run logs a step once; keep the last anyway
    if not val:
        raise cli.UsageError(f"{run}/metrics.jsonl has no val_loss lines yet (validation runs every --eval_every "
                             "steps); plot it once it has, or leave it out")
    if not train_tokens:
        raise cli.UsageError(f"{run}/metrics.jsonl has no training lines with tokens_seen; plot runs of "
                             "python -m backpack_dist.train")
    per_step = next(iter(train_tokens.items()))
    tokens_per_step = per_step[1] / per_step[0]
    steps = sorted(val)
    config = _run_config(run)
    model = config.get("model") if config.get("model") in MODEL_NAMES else run.name
    family, size = model.split("-", 1) if model in MODEL_NAMES else ("other", "other")
    label = run.name
    if family == "backpack" and config.get("n_senses") not in (None, 16):
        label += f" (k={config['n_senses']})"
    return Curve(label=label, family=family, size=size,
                 tokens=[train_tokens.get(s, round(s * tokens_per_step)) for s in steps],
                 val_loss=[val[s] for s in steps])


def _run_config(run: Path) -> dict:
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def draw(curves: list[Curve], out: Path) -> None:
    """One panel per size (the paper's order), Backpack and Transformer runs coloured apart;
    written to a temporary file first, so a failure leaves no PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    sizes = [s for s in (*SIZES, "other") if any(c.size == s for c in curves)]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        seen = {}
        for curve in (c for c in curves if c.size == size):
            style = STYLES[seen.get(curve.family, 0) % len(STYLES)]
            seen[curve.family] = seen.get(curve.family, 0) + 1
            ax.plot(curve.tokens, curve.val_loss, style, marker="o", markersize=3,
                    color=COLOURS.get(curve.family, "tab:gray"), label=curve.label)
        ax.set_title(size.capitalize() if size != "other" else "other runs")
        ax.set_xlabel("tokens seen")
        ax.xaxis.set_major_formatter(EngFormatter())  # 52 G rather than 5.2e10
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Validation loss against tokens seen")
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


@dataclasses.dataclass
class PlotOptions:
    runs: list[str] = cli.positional(default_factory=list)
    """training run directories (each with metrics.jsonl)"""
    out: str = "val_loss.png"
    """the PNG to write"""

    def __post_init__(self):
        if not self.runs:
            raise cli.UsageError("no runs given: python -m backpack_dist.plot RUN... --out loss.png")
        if not self.out.lower().endswith(".png"):
            raise cli.UsageError(f"--out {self.out}: give a file name ending in .png")
        folder = Path(self.out).absolute().parent
        if not folder.is_dir():
            raise cli.UsageError(f"--out {self.out}: folder {folder} does not exist; create it or choose another")
        if not os.access(folder, os.W_OK):
            raise cli.UsageError(f"--out {self.out}: folder {folder} is not writable; choose another")


def plot(options: PlotOptions) -> None:
    """Plot the validation loss of training runs against tokens seen, one panel per model size."""
    curves = [read_curve(run) for run in options.runs]  # every run is read before anything is drawn
    draw(curves, Path(options.out))
    print(f"wrote {options.out}: {len(curves)} run(s), " + ", ".join(
        f"{c.label} {len(c.val_loss)} validations, last {c.val_loss[-1]:.3f} at {c.tokens[-1]:,} tokens"
        for c in curves))


def main(argv=None):
    cli.run(plot, sys.argv[1:] if argv is None else argv, name="python -m backpack_dist.plot")


if __name__ == "__main__":
    main()
