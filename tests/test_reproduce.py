"""python -m backpack_dist.reproduce without a cluster: the plan of the paper's study (jobs, their
order and afterok dependencies, resources, tokens, GPU-hours and what the estimate rests on) as
--dry_run prints it, --only and --ablation, and bad input refused in one line. The same plan
submitted to a real SLURM cluster: tests/cluster/test_study_on_cluster.py."""

from __future__ import annotations

import re
import shlex

import pytest
from common import REPO

from backpack_dist.model.config import MODEL_NAMES, model_config
from backpack_dist.model.flops import training_flops_per_token
from backpack_dist.reproduce import cost
from backpack_dist.reproduce.__main__ import main
from backpack_dist.reproduce.plan import build_plan

PAPER_TOKENS = 100_000 * 1024 * 512
SLURM = REPO / "slurm"


@pytest.fixture
def study_env(monkeypatch, tmp_path):
    """A clean environment: none of the settings that the command passes on to the jobs."""
    for name in ("EXTRA_ARGS", "EVAL_ARGS", "TASKS", "PREP_ARGS", "NUM_SHARDS", "GPUS_PER_NODE", "SBATCH_ARGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dry_run(capsys, *args) -> tuple[str, list[list[str]]]:
    """The printed plan and its job table (one list of cells per row)."""
    main(["--dry_run", *args])
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#  job"))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return out, rows


def flags(extra_args: str) -> dict[str, str]:
    """EXTRA_ARGS as {flag: value} (their order follows TrainConfig's fields)."""
    words = shlex.split(extra_args)
    return dict(zip(words[::2], words[1::2], strict=True))


def plan(**overrides):
    settings = dict(only=[], ablation=False, ablation_steps=50_000, data_dir="data", runs_dir="runs", extra_args="",
                    prep_env={}, eval_env={}, gpus=None, gpu="H100", mfu=0.4)
    return build_plan(**{**settings, **overrides})


def test_dry_run_prints_the_whole_study_and_its_cost(study_env, capsys):
    out, rows = dry_run(capsys)
    names = [row[1] for row in rows]
    assert names == ["prep-owt", "prep-owt-merge", *(f"train-{m}" for m in MODEL_NAMES),
                     *(f"eval-{m}" for m in MODEL_NAMES), "table2"]
    by_name = {row[1]: row for row in rows}
    assert by_name["prep-owt"][3] == "16 jobs x 32 CPUs" and by_name["prep-owt-merge"][3] == "1 CPU"
    assert by_name["prep-owt-merge"][4] == "prep-owt" and by_name["table2"][3] == "1 CPU"
    assert by_name["train-backpack-small"][3] == "2 nodes x 8 GPUs" and by_name["train-transformer-micro"][3] == \
        "1 node x 8 GPUs"
    assert by_name["eval-backpack-small"][3] == "1 node x 1 GPU"
    assert all(by_name[f"train-{m}"][4] == "prep-owt-merge" and by_name[f"train-{m}"][5] == "52.4B"
               for m in MODEL_NAMES)
    assert all(by_name[f"eval-{m}"][4] == f"train-{m}" for m in MODEL_NAMES) and by_name["table2"][4] == "6 evals"
    # GPU-hours: the model's training FLOPs at the assumed MFU of an H100, said in words.
    config = model_config("transformer-small")
    hours = PAPER_TOKENS * training_flops_per_token(config) / (0.4 * 989e12) / 3600
    assert by_name["train-transformer-small"][6] == f"{hours:,.1f}*"
    assert "throughput not yet measured (docs/benchmarks.md); assumes 40% MFU of one H100's 989 TFLOP/s" in out
    total = sum(PAPER_TOKENS * training_flops_per_token(model_config(m)) / (0.4 * 989e12) / 3600 for m in MODEL_NAMES)
    assert f"Cost of the trainings: 314.6B tokens, about {total:,.0f} GPU-hours" in out
    assert "dry run: nothing is submitted" in out and not re.search(r"^submitted", out, re.M)
    # The commands printed are the ones submission runs, the recipe's defaults left to the scripts.
    assert (f"FAMILY=transformer CONFIG={REPO}/configs/transformer-small.toml RUN_DIR=runs/transformer-small "
            "DATA_DIR=data/openwebtext EXTRA_ARGS='' "
            "GPUS_PER_NODE=8 sbatch --parsable --job-name=train-transformer-small "
            f"--dependency=afterok:@prep-owt-merge --kill-on-invalid-dep=yes {SLURM}/train_small.sh") in out
    assert ("STEPS=100000 sbatch --parsable --job-name=eval-backpack-mini --dependency=afterok:@train-backpack-mini "
            f"--kill-on-invalid-dep=yes {SLURM}/eval.sh") in out
    assert f"{SLURM}/table.sh runs/backpack-micro/eval/step_00100000.json" in out


def test_only_plans_the_named_runs_and_skips_prepared_data(study_env, capsys):
    data = study_env / "owt"
    data.mkdir()
    (data / "dataset.json").write_text("{}")  # what the merge writes last
    out, rows = dry_run(capsys, "--only", "transformer-micro,backpack-micro", "--data_dir", str(data))
    assert [row[1] for row in rows] == ["train-backpack-micro", "train-transformer-micro", "eval-backpack-micro",
                                        "eval-transformer-micro", "table2"]
    assert rows[0][4] == "-"  # no prep to wait for
    assert rows[-1][4] == "eval-backpack-micro, eval-transformer-micro"
    assert "owt: prepared (dataset.json), reused" in out


def test_ablation_is_backpack_mini_with_each_k_at_50k_steps(study_env, capsys):
    out, rows = dry_run(capsys, "--ablation")
    trainings = [row for row in rows if row[1].startswith("train-")]
    assert [row[1] for row in trainings][6:] == [f"train-backpack-mini-k{k}" for k in (1, 4, 16, 64)]
    assert all(row[2] == "slurm/train_mini.sh" and row[5] == "26.2B" for row in trainings[6:])
    k64 = re.search(r"RUN_DIR=runs/backpack-mini-k64 \S+ EXTRA_ARGS='([^']*)'", out)
    assert k64 and flags(k64[1]) == {"--max_steps": "50000", "--n_senses": "64"}, out
    assert "runs/backpack-mini-k64/eval/step_00050000.json" in out
    jobs = plan(only=["backpack-mini-k1"], extra_args="--d_model 64 --n_layer 2 --n_head 2", ablation_steps=7).jobs
    train = next(j for j in jobs if j.kind == "train")
    assert flags(train.env["EXTRA_ARGS"]) == {"--max_steps": "7", "--d_model": "64", "--n_layer": "2", "--n_head": "2",
                                              "--n_senses": "1"}
    assert train.tokens == 7 * 1024 * 512 and next(j for j in jobs if j.kind == "eval").env["STEPS"] == "7"


def test_extra_args_reach_every_training_and_its_token_count(study_env):
    jobs = plan(only=["transformer-micro"], extra_args="--max_steps 30 --global_batch 8 --micro_batch 2 --seq_len 64 "
                                                       "--wandb disabled", eval_env={"TASKS": "owt"}, gpus=1).jobs
    train, evaluation, table = (next(j for j in jobs if j.kind == k) for k in ("train", "eval", "table"))
    assert flags(train.env["EXTRA_ARGS"]) == {"--global_batch": "8", "--micro_batch": "2", "--max_steps": "30",
                                              "--wandb": "disabled", "--seq_len": "64"}
    assert train.tokens == 30 * 8 * 64 and train.gpus_per_node == 1 and train.env["GPUS_PER_NODE"] == "1"
    assert evaluation.env["TASKS"] == "owt" and evaluation.env["STEPS"] == "30"
    assert table.args == (str(study_env / "runs" / "transformer-micro" / "eval" / "step_00000030.json"),)


def test_a_measured_throughput_replaces_the_assumption(tmp_path):
    bench = tmp_path / "benchmarks.md"
    bench.write_text("# x\n\n## Results on a GPU\n\n| date | device | command | model | implementation | micro batch | "
                     "tokens/s | MFU |\n|---|---|---|---|---|---|---|---|\n"
                     "| 2026-12-01 | NVIDIA H100 80GB HBM3 | bench | transformer-small | defaults | 32 | 400,000 | 0.5 "
                     "|\n"
                     "| - | H100 | see below | backpack-small | defaults | not yet measured | not yet measured | - |\n"
                     "\n## Next\n")
    got = cost.estimate("transformer-small", model_config("transformer-small"), PAPER_TOKENS, "H100", 0.4, bench)
    assert got.measured and got.gpu_hours == pytest.approx(PAPER_TOKENS / 400_000 / 3600)
    assert "measured 400,000 tokens/s on one NVIDIA H100 80GB HBM3 (2026-12-01" in got.basis
    assert not cost.estimate("backpack-small", model_config("backpack-small"), 1, "H100", 0.4, bench).measured
    # The repository's own file has no GPU figure yet.
    assert cost.measured_throughput("transformer-small") is None


@pytest.mark.parametrize("args, env, message", [
    (["--only", "backpack-micro,backpack-huge"], {}, "--only: unknown run 'backpack-huge'; choose from backpack-micro"),
    ([], {"EXTRA_ARGS": "--run_dir x"}, "EXTRA_ARGS sets --run_dir, which the study sets per run"),
    ([], {"EXTRA_ARGS": "--max_stepz 3"}, "EXTRA_ARGS: unknown flag --max_stepz; did you mean --max_steps?"),
    (["--ablation"], {"EXTRA_ARGS": "--d_model 32 --n_head 2"}, "backpack-mini-k64: d_model=32 is not divisible by "
                                                              "n_senses=64; change EXTRA_ARGS"),
    (["--only", "backpack-small"], {"EXTRA_ARGS": "--global_batch 1000"}, "backpack-small on 2 node(s) x 8 GPUs: "
                                                                          "global batch 1000 is not divisible"),
    (["--mfu", "3"], {}, "--mfu must be in [0.01, 1]"),
    (["--gpu", "X100"], {}, "--gpu X100: no bf16 peak known for it; choose one of"),
    ([], {"GPUS_PER_NODE": "eight"}, "GPUS_PER_NODE=eight: use a positive number"),
])
def test_bad_input_is_one_line_and_exit_2(study_env, capsys, monkeypatch, args, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        main(["--dry_run", *args])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and message in captured.err, \
        captured.err


def test_submitting_without_sbatch_says_so_before_printing(study_env, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(study_env))  # no sbatch on it: not a SLURM login node
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "backpack-micro"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err == "error: sbatch not found: submit from a SLURM login node (or --dry_run to see the plan)\n"


@pytest.mark.parametrize("limit, hours", [("24:00:00", 24), ("02:30:00", 2.5), ("90", 1.5), ("30:00", 0.5),
                                          ("1-12", 36), ("2-00:30", 48.5), ("1-00:00:36", 24.01)])
def test_time_limits_read_as_sbatch_does(limit, hours):
    from backpack_dist.reproduce.show import _hours

    assert _hours(limit) == pytest.approx(hours)


def test_every_training_reads_its_recipe_file(study_env, tmp_path, monkeypatch):
    """The plan's trainings are their configs/MODEL.toml (a changed file changes the plan), and the
    job is told that file (CONFIG) with only the flags that differ from it."""
    from backpack_dist.reproduce import plan as planning

    recipes = tmp_path / "configs"
    recipes.mkdir()
    for model in MODEL_NAMES:
        (recipes / f"{model}.toml").write_text(f'model = "{model}"\nmax_steps = 2000\nlr = 3e-4\n')
    monkeypatch.setattr(planning, "RECIPES", recipes)
    jobs = plan(only=["backpack-micro", "backpack-mini-k4"], extra_args="--lr 1e-3").jobs
    micro, k4 = (j for j in jobs if j.kind == "train")
    assert micro.env["CONFIG"] == str(recipes / "backpack-micro.toml") and micro.tokens == 2000 * 1024 * 512
    assert flags(micro.env["EXTRA_ARGS"]) == {"--lr": "0.001"}  # max_steps is the file's: not repeated
    assert k4.env["CONFIG"] == str(recipes / "backpack-mini.toml")
    assert flags(k4.env["EXTRA_ARGS"]) == {"--lr": "0.001", "--max_steps": "50000", "--n_senses": "4"}
