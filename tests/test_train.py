"""Real DeepSpeed engines over real processes (gloo on CPU) on MDS shards made from real text."""

import os
import shutil
import signal
import time

import psutil
import pytest
from train_helpers import run_training, start_training, tiny_run_args, train_lines, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shakespeare(shakespeare_data):
    return shakespeare_data


def assert_ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("zero", [1, 2, 3])
@pytest.mark.parametrize("family", ["backpack", "transformer"])
def test_two_process_training_lowers_loss(shakespeare, tmp_path, family, zero):
    run = tmp_path / "run"
    launcher = "torchrun" if zero == 1 else "deepspeed"  # both launchers are supported
    assert_ok(run_training(2, tiny_run_args(f"{family}-micro", shakespeare, run, zero=zero, steps=16),
                           launcher=launcher))
    lines = train_lines(run)
    assert sorted(lines) == list(range(1, 17))
    assert lines[16]["loss"] < lines[1]["loss"] - 0.5
    assert (run / "checkpoints" / "step_00000016" / "COMPLETE").is_file()


@pytest.fixture(scope="module")
def uninterrupted(shakespeare, tmp_path_factory):
    run = tmp_path_factory.mktemp("baseline") / "run"
    assert_ok(run_training(2, tiny_run_args("backpack-micro", shakespeare, run, steps=40, extra=["--dropout", "0.1"])))
    return run


def test_sigkill_after_checkpoint_then_rerun_is_bit_exact(shakespeare, uninterrupted, tmp_path):
    run = tmp_path / "run"
    args = tiny_run_args("backpack-micro", shakespeare, run, steps=40, extra=["--dropout", "0.1"])
    proc = start_training(2, args, tmp_path / "killed.log")
    wait_until(lambda: (run / "checkpoints" / "step_00000020" / "COMPLETE").is_file(), proc,
               "checkpoint 20", timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert_ok(run_training(2, args))
    expected, got = train_lines(uninterrupted), train_lines(run)
    assert sorted(got) == list(range(1, 41))
    for step in range(21, 41):
        assert got[step] == expected[step], step


def worker_processes(launcher_pid):
    """The training processes themselves (`python -m backpack_dist.train`), not the launchers."""
    return [p for p in psutil.Process(launcher_pid).children(recursive=True)
            if "-m backpack_dist.train" in " ".join(p.cmdline())]


def test_sigusr1_saves_exits_resumable_and_rerun_is_bit_exact(shakespeare, uninterrupted, tmp_path):
    run = tmp_path / "run"
    args = tiny_run_args("backpack-micro", shakespeare, run, steps=40, extra=["--dropout", "0.1"])
    proc = start_training(2, args, tmp_path / "signalled.log")
    wait_until(lambda: (run / "checkpoints" / "step_00000010" / "COMPLETE").is_file(), proc,
               "checkpoint 10", timeout=240)
    time.sleep(0.5)
    for worker in worker_processes(proc.pid):
        worker.send_signal(signal.SIGUSR1)
    proc.wait(timeout=120)
    assert proc.returncode == 75, (tmp_path / "signalled.log").read_text()[-3000:]
    saved = sorted(p.name for p in (run / "checkpoints").glob("step_*") if (p / "COMPLETE").exists())
    stopped_at = int(saved[-1].split("_")[1])
    assert 10 < stopped_at < 40
    assert_ok(run_training(2, args))
    expected, got = train_lines(uninterrupted), train_lines(run)
    assert sorted(got) == list(range(1, 41))
    for step in range(stopped_at + 1, 41):
        assert got[step] == expected[step], step


def test_sigterm_to_every_process_of_the_job_saves_and_exits_resumable(shakespeare, tmp_path):
    """Slurm's preemption and scancel send SIGTERM to every process of the job: the data-loader
    worker and wandb's service too, not only the trainer. A torn last metrics line (killed
    mid-write) does not stop the rerun either."""
    run = tmp_path / "run"
    args = tiny_run_args("backpack-micro", shakespeare, run, steps=400,
                         extra=["--num_workers", "1", "--wandb", "offline", "--keep", "1"])
    proc = start_training(1, args, tmp_path / "terminated.log")
    wait_until(lambda: (run / "checkpoints" / "step_00000010" / "COMPLETE").is_file(), proc,
               "checkpoint 10", timeout=240)
    second = run_training(1, args)  # the same command again while the first runs: refused, nothing touched
    assert second.returncode == 2 and f"is in use by training pid {proc.pid}" in second.stderr, second.stderr[-2000:]
    job = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    assert len(job) >= 3, "expected the trainer, its loader worker and wandb's service"
    for pid in job:
        os.kill(pid, signal.SIGTERM)
    proc.wait(timeout=120)
    log = (tmp_path / "terminated.log").read_text()
    assert proc.returncode == 75, log[-3000:]
    saved = [p.name for p in (run / "checkpoints").glob("step_*") if (p / "COMPLETE").exists()]
    stopped_at = int(max(saved).split("_")[1])
    assert 10 < stopped_at < 400
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 401, "loss": 1.')
    assert_ok(run_training(1, tiny_run_args("backpack-micro", shakespeare, run, steps=stopped_at + 2,
                                            extra=["--num_workers", "1", "--wandb", "offline", "--keep", "1"])))
    assert sorted(train_lines(run))[-3:] == [stopped_at, stopped_at + 1, stopped_at + 2]


@pytest.mark.parametrize("zero", [2, 0])
def test_resume_two_processes_on_one(shakespeare, tmp_path, zero):
    """ZeRO 1-3 go through DeepSpeed's universal checkpoint; ZeRO 0's files already hold everything."""
    two = tmp_path / "two"
    args = tiny_run_args("backpack-micro", shakespeare, two, zero=zero, steps=30, extra=["--dropout", "0.0"])
    assert_ok(run_training(2, args))
    one = tmp_path / "one"
    shutil.copytree(two, one)
    shutil.rmtree(one / "checkpoints" / "step_00000030")
    (one / "metrics.jsonl").write_text("".join(
        line + "\n" for line in (two / "metrics.jsonl").read_text().splitlines() if '"step": 2' in line[:12]
        or '"step": 1' in line[:12]))  # keep the log consistent up to the checkpoint
    result = run_training(1, tiny_run_args("backpack-micro", shakespeare, one, zero=zero, steps=30,
                                           extra=["--dropout", "0.0", "--keep", "1"]))
    assert_ok(result)
    assert ("universal checkpoint" in result.stdout + result.stderr) == (zero != 0)
    # --keep 1 removed step 20 and the universal copy made from it to resume here
    assert sorted(p.name for p in (one / "checkpoints").glob("step_*")) == ["step_00000030"]
    expected, got = train_lines(two), train_lines(one)
    for step in range(21, 31):
        assert abs(got[step]["loss"] - expected[step]["loss"]) < 1e-3, (step, got[step], expected[step])
        assert got[step]["lr"] == pytest.approx(expected[step]["lr"])


def test_keep_and_incomplete_checkpoints_are_never_used(uninterrupted, tmp_path):
    from backpack_dist import checkpoint
    from backpack_dist.pretrained import load_pretrained

    ckpts = uninterrupted / "checkpoints"
    assert checkpoint.complete_steps(ckpts) == [20, 30, 40]  # --keep 3 deleted step 10
    assert (ckpts / "latest").read_text().strip() == "step_00000040"
    crashed = tmp_path / "run"
    shutil.copytree(uninterrupted, crashed)
    (crashed / "checkpoints" / "step_00000040" / "COMPLETE").unlink()  # as if killed mid-save
    assert checkpoint.latest_complete_step(crashed / "checkpoints") == 30
    _, _, info = load_pretrained(crashed)
    assert info["step"] == 30
    with pytest.raises(ValueError, match="incomplete"):
        load_pretrained(crashed / "checkpoints" / "step_00000040")
