"""python -m backpack_dist.eval --checkpoint PATH --tasks owt,lambada,wikitext,blimp,similarity --out results.json
python -m backpack_dist.eval table results/*.json
python -m backpack_dist.eval install_lm_eval   # makes `lm_eval --model backpack` work in this environment"""

import functools
import os
import sys

from fire.decorators import SetParseFn

from .. import cli


@SetParseFn(str)  # file names stay text: fire would read a file named 2024 as a number
def table(*paths):
    """Print results files as markdown in the layout of the paper's Table 2."""
    from .results import render

    print(render(paths))


def install_lm_eval():
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"table": table, "install_lm_eval": install_lm_eval}
    if argv and argv[0] in commands:
        cli.run(commands[argv[0]], argv[1:], name=f"backpack_dist.eval {argv[0]}", errors=(ValueError,))
        return
    from .runner import evaluate

    @functools.wraps(evaluate)  # fire reads the flags from evaluate's signature
    def run(*args, **kwargs):
        report = evaluate(*args, **kwargs)
        if os.environ.get("RANK", "0") == "0":  # one summary for a torchrun-sharded run
            print(summary(report))

    cli.run(run, argv, name="backpack_dist.eval", errors=(ValueError,))


if __name__ == "__main__":
    main()
