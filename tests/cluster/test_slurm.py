"""The real sbatch scripts of slurm/ on a real two-node SLURM cluster (conftest.py), training on CPU:
data prep as an array job plus a dependent merge, a 2-node x 1-process training run, the same run
requeued by Slurm mid-run and stopped by the time-limit signal mid-run (both finish with the
uninterrupted run's losses), and scoring a run's checkpoints."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from train_helpers import TINY, train_lines

from backpack_dist import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "slurm"
STEPS = 40
TRAIN_FLAGS = [*TINY, "--global_batch", "8", "--micro_batch", "2", "--max_steps", str(STEPS), "--lr", "3e-3",
               "--warmup_steps", "2", "--log_every", "1", "--eval_every", "10", "--eval_batches", "2",
               "--save_every", "10", "--dropout", "0.1", "--wandb", "disabled", "--num_workers", "0"]
# The scripts' defaults are for GPU nodes; on this cluster: two nodes of one CPU process each, no GPUs.
SBATCH_CPU = ["--nodes=2", "--gres=none", "--time=20"]


def job_env(**settings) -> dict:
    env = {"PYTHON": sys.executable, "REPO": str(REPO), "OMP_NUM_THREADS": "1"}
    env.update({k: str(v) for k, v in settings.items()})
    return env


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory) -> Path:
    """The submit directory: the scripts' default --output=%x-%j.out files land here."""
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def prepared(cluster, jobs_dir, tmp_path_factory, shared_data):
    """`bash slurm/prep_owt.sh`: an array of 2 data-prep jobs and a merge job that waits for them."""
    out = tmp_path_factory.mktemp("data") / "owt"
    text = shared_data / "openwebtext_sample" / "owt_first_docs_concat.txt"
    env = job_env(OUT_DIR=out, NUM_SHARDS=2,
                  PREP_ARGS=f"--input {text} --seq_len 64 --val_fraction 0.05 --part_mb 0.1")
    result = cluster.run(["bash", str(SLURM / "prep_owt.sh"), "--cpus-per-task=1", "--mem=1G"], env=env,
                         cwd=jobs_dir)
    ids = re.search(r"prep array job (\d+) \(2 shards\) and merge job (\d+)", result.stdout)
    assert ids, result.stdout + result.stderr
    array_id, merge_id = int(ids[1]), int(ids[2])
    merge = cluster.wait_done(merge_id, timeout=180)
    return {"out": out, "array": array_id, "merge": merge}


@pytest.fixture(scope="module")
def uninterrupted(cluster, jobs_dir, prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    job_id = submit_training(cluster, jobs_dir, prepared["out"], run)
    info = cluster.wait_done(job_id)
    return {"run": run, "job": job_id, "info": info, "log": Path(info["StdOut"]).read_text()}


def submit_training(cluster, jobs_dir, data, run) -> int:
    """train_micro.sh with TRAIN_FLAGS: the steps and the learning rate in a CONFIG file, the rest as EXTRA_ARGS."""
    recipe = jobs_dir / "recipe.toml"
    recipe.write_text(f'model = "backpack-micro"\nmax_steps = {STEPS}\nlr = 3e-3\nglobal_batch = 1024\n')
    flags = dict(zip(TRAIN_FLAGS[::2], TRAIN_FLAGS[1::2], strict=True))
    extra = [part for flag, value in flags.items() if flag not in ("--max_steps", "--lr") for part in (flag, value)]
    env = job_env(DATA_DIR=data, RUN_DIR=run, GPUS_PER_NODE=1, CONFIG=recipe, EXTRA_ARGS=" ".join(extra))
    return cluster.sbatch(SLURM / "train_micro.sh", *SBATCH_CPU, env=env, cwd=jobs_dir)


def wait_for_checkpoint(cluster, job_id: int, run: Path, step: int, timeout: float = 180) -> None:
    marker = run / "checkpoints" / checkpoint.tag_for_step(step) / "COMPLETE"
    deadline = time.time() + timeout
    while not marker.is_file():
        state = cluster.job(job_id)["JobState"]
        assert state in ("PENDING", "RUNNING"), f"job ended before step {step}\n{cluster.describe(job_id)}"
        assert time.time() < deadline, f"no checkpoint {step} after {timeout}s\n{cluster.describe(job_id)}"
        time.sleep(0.2)


def resumed_step(log: str) -> int:
    found = re.findall(r"resumed from \S*step_(\d{8})", log)
    assert len(found) == 1, f"expected one 'resumed from' line in the job log:\n{log[-4000:]}"
    return int(found[0])


def assert_same_training_after(run: Path, reference: Path, step: int) -> None:
    got, expected = train_lines(run), train_lines(reference)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got[STEPS]["loss"] == expected[STEPS]["loss"]
    for s in range(step + 1, STEPS + 1):
        assert got[s] == expected[s], (s, got[s], expected[s])


@pytest.mark.timeout(420)
def test_prep_array_then_merge(cluster, prepared):
    tasks = cluster.run(["scontrol", "show", "job", "-o", str(prepared["array"])]).stdout.splitlines()
    assert len(tasks) == 2 and all("JobState=COMPLETED" in t for t in tasks), tasks
    last_end = max(re.search(r"EndTime=(\S+)", t)[1] for t in tasks)
    assert prepared["merge"]["StartTime"] >= last_end  # the merge waited for the whole array
    info = json.loads((prepared["out"] / "dataset.json").read_text())
    assert info["seq_len"] == 64
    assert (prepared["out"] / "train" / "index.json").is_file() and (prepared["out"] / "val" / "index.json").is_file()


@pytest.mark.timeout(420)
def test_two_nodes_train_one_run(cluster, uninterrupted):
    log, run = uninterrupted["log"], uninterrupted["run"]
    assert "node 0 of 2 (n1)" in log and "node 1 of 2 (n2)" in log, log[-3000:]
    assert "rendezvous n1:" in log and "recipe.toml" in log
    saved = json.loads((run / "config.json").read_text())  # the file's values, EXTRA_ARGS over them
    assert (saved["max_steps"], saved["lr"], saved["global_batch"]) == (STEPS, 3e-3, 8)
    assert checkpoint.saved_world_size(run, STEPS) == 2  # one process group across both nodes
    lines = train_lines(run)
    assert sorted(lines) == list(range(1, STEPS + 1))
    assert lines[STEPS]["loss"] < lines[1]["loss"] - 1.0
    # A finished job ends COMPLETED and is not requeued.
    assert uninterrupted["info"]["Restarts"] == "0" and "training finished" in log and "requeueing" not in log


@pytest.mark.timeout(420)
def test_scontrol_requeue_mid_run_resumes_to_the_same_loss(cluster, jobs_dir, prepared, uninterrupted, tmp_path):
    run = tmp_path / "run"
    job_id = submit_training(cluster, jobs_dir, prepared["out"], run)
    wait_for_checkpoint(cluster, job_id, run, 10)
    # Slurm sends SIGTERM to every process of the job, the training processes save at their next
    # step boundary (or die, leaving the last periodic checkpoint), and the job goes back to the queue.
    cluster.run(["scontrol", "requeue", str(job_id)])
    cluster.start_now(job_id)
    info = cluster.wait_done(job_id)
    log = Path(info["StdOut"]).read_text()
    assert info["Restarts"] == "1", cluster.describe(job_id)
    step = resumed_step(log)
    assert 10 <= step < STEPS, log[-3000:]
    assert_same_training_after(run, uninterrupted["run"], step)


@pytest.mark.timeout(420)
def test_time_limit_signal_saves_requeues_and_resumes(cluster, jobs_dir, prepared, uninterrupted, tmp_path):
    run = tmp_path / "run"
    job_id = submit_training(cluster, jobs_dir, prepared["out"], run)
    wait_for_checkpoint(cluster, job_id, run, 10)
    # What --signal=B:USR1@600 does before the time limit: the batch shell alone gets SIGUSR1.
    cluster.run(["scancel", "--signal=USR1", "--batch", str(job_id)])
    cluster.start_now(job_id)  # the script requeued its own job
    info = cluster.wait_done(job_id)
    log = Path(info["StdOut"]).read_text()
    assert info["Restarts"] == "1", cluster.describe(job_id)
    assert "SIGUSR1" in log and "requeueing" in log, log[-3000:]
    # The request reached the training processes alone (helper processes die of SIGUSR1).
    assert log.count("stop requested") == 2 and "process died unexpectedly" not in log, log[-3000:]
    saved = re.search(r"after saving step (\d+)", log)
    assert saved, log[-3000:]
    step = resumed_step(log)
    assert step == int(saved[1]) and 10 <= step < STEPS, log[-3000:]
    assert_same_training_after(run, uninterrupted["run"], step)


@pytest.mark.timeout(420)
def test_eval_scores_the_latest_checkpoint(cluster, jobs_dir, prepared, uninterrupted, shared_data):
    run = uninterrupted["run"]
    env = job_env(RUN_DIR=run, DATA_DIR=prepared["out"], STEPS="latest", TASKS="owt,lambada",
                  EVAL_ARGS=f"--lambada_path {shared_data / 'lambada_openai' / 'lambada_test.jsonl'} --limit 8 "
                            "--device cpu")
    # A resume on another number of processes leaves a step_N_universal copy: not a checkpoint to score.
    universal = run / "checkpoints" / (checkpoint.tag_for_step(STEPS) + "_universal")
    universal.mkdir()
    (universal / "COMPLETE").write_text("{}\n")
    try:
        job_id = cluster.sbatch(SLURM / "eval.sh", "--gres=none", "--mem=1G", "--cpus-per-task=1", env=env,
                                cwd=jobs_dir)
        info = cluster.wait_done(job_id)
    finally:
        shutil.rmtree(universal)
    report = json.loads((run / "eval" / f"{checkpoint.tag_for_step(STEPS)}.json").read_text())
    assert report["step"] == STEPS and report["model_name"] == "backpack-micro"
    assert set(report["results"]) == {"owt", "lambada"}
    assert "| backpack-micro" in Path(info["StdOut"]).read_text()
