"""python -m backpack_dist.eval --checkpoint PATH --tasks owt,lambada,wikitext,blimp,similarity --out results.json
python -m backpack_dist.eval table results/*.json
python -m backpack_dist.eval install_lm_eval   # makes `lm_eval --model backpack` work in this environment"""

import dataclasses
import os
import sys
import typing

from .. import cli
from .runner import DEFAULT_TASKS


def table(*paths: str):
    """Print results files as markdown in the layout of the paper's Table 2: per cell ours, the
    paper's number in parentheses and ours - paper (and the sense-count ablation's OWT PPL)."""
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


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    checkpoint: str = cli.positional()
    """An export dir, a training run dir or one of its checkpoints, or a transformers folder."""
    tasks: str = DEFAULT_TASKS
    """Comma-separated, from owt,lambada,wikitext,blimp,similarity; similarity means
    simlex,simverb,rg65,ws353, each of which can be named alone."""
    out: str = "results.json"
    """The results JSON to write."""
    limit: int | None = None
    """Score only the first N examples of each task (quick checks)."""
    batch_size: int = 16
    """Requests scored at once."""
    device: str | None = None
    """cpu, cuda or cuda:N; default: the GPU when there is one."""
    dtype: typing.Literal["bf16", "fp32"] | None = None
    """bf16 or fp32; default: bf16 autocast on GPUs."""
    owt_val_dir: str | None = None
    """Data-prep output holding val/ and dataset.json, instead of rebuilding OWT's split from the hub."""
    lambada_path: str | None = None
    """OpenAI's lambada_test.jsonl, instead of the hub."""
    wikitext_path: str | None = None
    """wiki.test.raw, instead of the hub."""
    blimp_dir: str | None = None
    """Folder of BLiMP's UID.jsonl files, instead of the hub."""
    similarity_dir: str | None = None
    """Folder holding, in it or its subfolders, each set's original release (SimLex-999.txt,
    SimVerb-3500.txt, RG65.txt, WordSim-353 combined.tab) or collection file (EN-SIMLEX-999.txt,
    EN-SimVerb-3500.txt, EN-RG-65.txt, EN-WS-353-ALL.txt: word, word, score)."""
    progress: bool = True
    """Show progress bars (--noprogress hides them)."""

    def __post_init__(self):
        cli.check_range(self, "limit", low=1)
        cli.check_range(self, "batch_size", low=1)


def run(options: EvalOptions) -> None:
    """Score a checkpoint on the paper's benchmarks and write one results JSON.

    Other commands: `python -m backpack_dist.eval table results/*.json` prints results files as markdown
    beside the paper's Table 2; `python -m backpack_dist.eval install_lm_eval` registers the "backpack"
    model with lm-evaluation-harness (`lm_eval --model backpack --model_args checkpoint=PATH`). Data come
    from the Hugging Face hub unless a local flag names them; docs/eval.md describes the metrics."""
    from .runner import evaluate

    report = evaluate(**dataclasses.asdict(options))
    if os.environ.get("RANK", "0") == "0":  # one summary for a torchrun-sharded run
        print(summary(report))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"table": table, "install_lm_eval": install_lm_eval}
    if argv and argv[0] in commands:
        cli.run(commands, argv, name="backpack_dist.eval", errors=(ValueError,))
    else:
        cli.run(run, argv, name="backpack_dist.eval", errors=(ValueError,))


if __name__ == "__main__":
    main()
