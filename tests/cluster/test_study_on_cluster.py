"""`bash slurm/reproduce_paper.sh` on the real two-node SLURM cluster (conftest.py), at a tiny size
set through the same environment variables a user sets (EXTRA_ARGS, EVAL_ARGS, SBATCH_ARGS, ...):
--dry_run submits nothing; the real submission (--only three of the six runs) runs data prep, the
trainings (one of them requeued by the time-limit signal), their evals and the Table-2 job, each after
the jobs it depends on, and the table and the loss plot appear."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from train_helpers import TINY

from backpack_dist import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
STEPS = 4
# Both families, the one-node and the two-node script: the whole study is the same jobs six times
# over (its 15-job plan is checked by the dry run below), and trainings take whole nodes (--exclusive),
# so all six would take two more rounds of this cluster's two nodes.
ONLY = ("backpack-micro", "transformer-micro", "transformer-small")
TRAIN_FLAGS = [*TINY, "--global_batch", "8", "--micro_batch", "2", "--max_steps", str(STEPS), "--lr", "3e-3",
               "--warmup_steps", "2", "--log_every", "1", "--eval_every", "2", "--eval_batches", "2",
               "--save_every", str(STEPS), "--wandb", "disabled", "--num_workers", "0"]


def study_env(shared_data) -> dict:
    text = shared_data / "openwebtext_sample" / "owt_first_docs_concat.txt"
    return {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPUS_PER_NODE": "1", "NUM_SHARDS": "2",
            "PREP_ARGS": f"--input {text} --seq_len 64 --val_fraction 0.05",
            "EXTRA_ARGS": " ".join(TRAIN_FLAGS), "TASKS": "owt,lambada",
            "EVAL_ARGS": f"--lambada_path {shared_data / 'lambada_openai' / 'lambada_test.jsonl'} --limit 8 "
                         "--device cpu",
            # CPU nodes of 2 CPUs and 4 GB: no GPUs, and every job fits (prep's merge asks for 8G).
            "SBATCH_ARGS": "--gres=none --time=20 --mem=500M --cpus-per-task=1"}


def times(cluster, job_id: str) -> list[tuple[str, str, str]]:
    """(state, start, end) of a job, one per task for an array."""
    out = cluster.run(["scontrol", "show", "job", "-o", job_id]).stdout.splitlines()
    return [tuple(re.search(rf"{key}=(\S+)", line)[1] for key in ("JobState", "StartTime", "EndTime")) for line in out]


@pytest.mark.timeout(480)
def test_one_command_runs_the_whole_study_in_order(cluster, shared_data, tmp_path):
    data, runs, submit_dir = tmp_path / "owt", tmp_path / "runs", tmp_path / "jobs"
    submit_dir.mkdir()
    command = ["bash", str(REPO / "slurm" / "reproduce_paper.sh"), "--data_dir", str(data), "--runs_dir", str(runs)]
    env = study_env(shared_data)

    whole = cluster.run([*command, "--dry_run"], env=env, cwd=submit_dir).stdout
    assert "6 training run(s), 15 SLURM jobs (dry run: nothing is submitted)" in whole, whole
    command += ["--only", ",".join(ONLY)]
    plan = cluster.run([*command, "--dry_run"], env=env, cwd=submit_dir).stdout
    assert "3 training run(s), 9 SLURM jobs (dry run: nothing is submitted)" in plan, plan
    assert cluster.run(["squeue", "-h"]).stdout.strip() == "" and not data.exists() and not runs.exists()

    result = cluster.run(command, env=env, cwd=submit_dir, timeout=180)
    ids = dict(re.findall(r"^submitted (\S+): job (\d+)$", result.stdout, re.M))
    names = ["prep-owt", "prep-owt-merge", *(f"{kind}-{m}" for kind in ("train", "eval") for m in ONLY), "table2"]
    assert sorted(ids) == sorted(names), result.stdout + result.stderr
    # The plan printed before submitting is the dry run's, word for word (same data structure).
    assert result.stdout.startswith(plan.replace(" (dry run: nothing is submitted)", "")), result.stdout[:3000]

    # The time-limit warning on a training: it saves, requeues itself and resumes; its eval waits
    # for the end of the requeued job, not for the first start's.
    first = int(ids["train-backpack-micro"])
    info = cluster.wait_for(first, lambda j: j["JobState"] == "RUNNING" and "training process(es)" in
                            Path(j["StdOut"]).read_text(errors="replace") if Path(j["StdOut"]).is_file() else False,
                            180, "train-backpack-micro to launch its training")
    cluster.run(["scancel", "--signal=USR1", "--batch", str(first)])
    cluster.start_now(first)  # the script requeued its own job; skip Slurm's two-minute hold
    cluster.wait_done(int(ids["table2"]), timeout=420)
    assert cluster.job(first)["Restarts"] == "1" and "requeueing" in Path(info["StdOut"]).read_text()
    jobs = {name: times(cluster, ids[name]) for name in names}
    for name, tasks in jobs.items():
        assert all(state == "COMPLETED" for state, _, _ in tasks), (name, tasks, cluster.describe(int(ids[name])))
    assert len(jobs["prep-owt"]) == 2  # the array of NUM_SHARDS prep jobs

    def started_after(job: str, *dependencies: str) -> None:
        start = jobs[job][0][1]
        for dependency in dependencies:
            assert all(start >= end for _, _, end in jobs[dependency]), (job, jobs[job], dependency, jobs[dependency])

    started_after("prep-owt-merge", "prep-owt")
    for model in ONLY:
        started_after(f"train-{model}", "prep-owt-merge")
        started_after(f"eval-{model}", f"train-{model}")
    started_after("table2", *(f"eval-{m}" for m in ONLY))

    final = checkpoint.tag_for_step(STEPS)
    assert checkpoint.saved_world_size(runs / "transformer-small", STEPS) == 2  # train_small.sh: two nodes
    for model in ONLY:
        assert (runs / model / "checkpoints" / final / "COMPLETE").is_file()
        assert (runs / model / "eval" / f"{final}.json").is_file()
    table = (runs / "table2.md").read_text()
    for model in ONLY:
        assert f"| {model} (custom size) @{STEPS} (limit 8) |" in table, table
    log = Path(cluster.job(int(ids["table2"]))["StdOut"]).read_text()
    assert table.strip() in log and f"wrote {runs}/table2.md and {runs}/val_loss.png" in log
    with Image.open(runs / "val_loss.png") as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert image.format == "PNG" and pixels.std() > 10 and pixels.shape[1] > 1.5 * pixels.shape[0]  # 2 panels


@pytest.mark.timeout(240)
def test_a_failed_training_cancels_its_eval_and_the_table(cluster, shared_data, tmp_path):
    data, runs = tmp_path / "owt", tmp_path / "runs"
    data.mkdir()
    (data / "dataset.json").write_text("{}")  # a broken data folder: "prepared", but without a train/ split
    command = ["bash", str(REPO / "slurm" / "reproduce_paper.sh"), "--data_dir", str(data), "--runs_dir", str(runs),
               "--only", "backpack-micro"]
    result = cluster.run(command, env=study_env(shared_data), cwd=tmp_path, timeout=180)
    ids = dict(re.findall(r"^submitted (\S+): job (\d+)$", result.stdout, re.M))
    assert sorted(ids) == ["eval-backpack-micro", "table2", "train-backpack-micro"], result.stdout  # no prep
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
    train = cluster.wait_for(int(ids["train-backpack-micro"]), lambda j: j["JobState"] in final, 180, "the training")
    assert train["JobState"] == "FAILED" and "has no train/ split" in Path(train["StdOut"]).read_text()
    for name in ("eval-backpack-micro", "table2"):
        info = cluster.wait_for(int(ids[name]), lambda j: j["JobState"] in final, 60, name)
        assert info["JobState"] == "CANCELLED" and info["Reason"] == "DependencyNeverSatisfied", info
    assert not (runs / "table2.md").exists()
