"""python -m backpack_dist.eval --checkpoint PATH --tasks owt,lambada,wikitext,blimp,similarity --out results.json
python -m backpack_dist.eval table results/*.json
python -m backpack_dist.eval install_lm_eval   # makes `lm_eval --model backpack` work in this environment"""

import dataclasses
import inspect
import os
import sys

from .. import cli
from .options import EvalOptions
from .tasks import tasks_help


@dataclasses.dataclass(frozen=True)
class TableOptions:
    paths: list[str] = cli.positional(default_factory=list)
    """Results files of `python -m backpack_dist.eval` (a.json b.json, or a shell glob)."""


def table(options: TableOptions):
    """Print results files as markdown in the layout of the paper's Table 2: per cell ours, the
    paper's number in parentheses and ours - paper (and the sense-count ablation's OWT PPL)."""
    from .results import render

    print(render(options.paths))


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A command without flags."""


def install_lm_eval(_: NoOptions):
    """Register the "backpack" model with lm-evaluation-harness for this Python environment."""
    from .lm_eval_hook import install

    print(f"installed {install()}: lm_eval --model backpack --model_args checkpoint=PATH now works")


def summary(report: dict) -> str:
    step = "" if report["step"] is None else f" step {report['step']}"
    lines = [f"{report['model_name']}{step} ({report['checkpoint']})"]
    for task, metrics in report["results"].items():
        # per-sub-task and per-sense figures stay in the file; sense_min is the paper's Sim_min
        shown = {k: v for k, v in metrics.items() if "/" not in k and not (k.startswith("sense_") and k != "sense_min")}
        lines.append(f"  {task}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in shown.items()))
    if "written_to" in report:
        lines.append(f"wrote {report['written_to']}")
    return "\n".join(lines)


def run(options: EvalOptions) -> None:
    """Score a checkpoint on the paper's benchmarks and write one results JSON.

    Other commands: `python -m backpack_dist.eval table results/*.json` prints results files as markdown
    beside the paper's Table 2; `python -m backpack_dist.eval install_lm_eval` registers the "backpack"
    model with lm-evaluation-harness (`lm_eval --model backpack --model_args checkpoint=PATH`). Data come
    from the Hugging Face hub unless a local flag names them; docs/eval.md describes the metrics."""
    from .runner import evaluate

    report = evaluate(options)
    if os.environ.get("RANK", "0") == "0":  # one summary for a torchrun-sharded run
        print(summary(report))


run.__doc__ = f"{inspect.cleandoc(run.__doc__)}\n\n{tasks_help()}"  # --help lists the tasks of the table


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"table": table, "install_lm_eval": install_lm_eval}
    if argv and argv[0] in commands:
        cli.run(commands, argv, name="backpack_dist.eval", errors=(ValueError,))
    else:
        cli.run(run, argv, name="backpack_dist.eval", errors=(ValueError,))


if __name__ == "__main__":
    main()
