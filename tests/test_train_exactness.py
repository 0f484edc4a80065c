"""Bit-exact reruns without the user's help: with OMP_NUM_THREADS unset, a two-process run on CPU
fixes its thread count (backpack_dist/train/exactness.py), records it in RUN/config.json and
resumes with it, even when the rerun's environment asks for another count. (tests/train_helpers
sets OMP_NUM_THREADS=1 for every other test; here it is unset.)"""

import json
import os

import pytest
from crash_helpers import resumed_from, run_until_killed
from train_helpers import run_training, tiny_run_args, train_lines

pytestmark = pytest.mark.slow

UNSET = {"OMP_NUM_THREADS": None}


@pytest.fixture(scope="module")
def data(shakespeare_data):
    return shakespeare_data


def test_sigkill_and_rerun_without_omp_num_threads_is_bit_exact(data, tmp_path):
    def args(run):
        return tiny_run_args("backpack-micro", data, run, steps=24,
                             extra=["--dropout", "0.1", "--save_every", "8", "--eval_every", "8"])

    baseline = tmp_path / "baseline"
    result = run_training(2, args(baseline), extra_env=UNSET)
    assert result.returncode == 0, result.stderr[-3000:]
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # this machine's cores shared by the 2 processes
    assert json.loads((baseline / "config.json").read_text())["cpu_threads"] == threads

    run = tmp_path / "run"
    run_until_killed(2, args(run), tmp_path, "after_complete:8", name="first", extra_env=UNSET)
    # Another launcher or user may set another count: the run keeps its own.
    log = run_until_killed(2, args(run), tmp_path, "after_complete:16", name="second",
                           extra_env={"OMP_NUM_THREADS": str(threads + 1)})
    assert resumed_from(log) == 8
    assert f"resuming with the run's recorded {threads} CPU threads per process" in log
    result = run_training(2, args(run), extra_env=UNSET)
    assert result.returncode == 0, result.stderr[-3000:]
    assert resumed_from(result.stdout) == 16
    assert json.loads((run / "config.json").read_text())["cpu_threads"] == threads
    got, expected = train_lines(run), train_lines(baseline)
    assert sorted(got) == list(range(1, 25))
    for step in range(1, 25):
        assert got[step] == expected[step], (step, got[step], expected[step])
