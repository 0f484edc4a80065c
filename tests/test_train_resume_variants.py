"""Resume under the settings the other resume tests leave out: --compile true (torch.compile,
inductor on CPU) and ds_configs/zero3_offload.json (DeepSpeed's CPU Adam). Each trains, saves,
is SIGKILLed just after the checkpoint is complete, and the same command resumes from it with
the uninterrupted run's numbers, bit for bit."""

import pytest
from crash_helpers import resumed_from, run_until_killed
from train_helpers import REPO, run_training, tiny_run_args, train_lines

pytestmark = pytest.mark.slow

STEPS, SAVE = 8, 4


@pytest.fixture(scope="module")
def data(shakespeare_data):
    return shakespeare_data


@pytest.mark.parametrize("variant, flags", [
    ("compile", ["--compile", "true"]),
    ("zero3_offload", ["--ds_config", str(REPO / "ds_configs" / "zero3_offload.json")]),
])
def test_killed_after_a_save_resumes_bit_exact(data, tmp_path, variant, flags):
    def args(run):
        return tiny_run_args("backpack-micro", data, run, steps=STEPS,
                             extra=["--dropout", "0.1", "--save_every", str(SAVE), "--eval_every", str(SAVE), *flags])

    baseline = tmp_path / "baseline"
    result = run_training(1, args(baseline), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    run_until_killed(1, args(run), tmp_path, f"after_complete:{SAVE}")
    assert sorted(train_lines(run)) == list(range(1, SAVE + 1))
    result = run_training(1, args(run), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert resumed_from(result.stdout) == SAVE
    got, expected = train_lines(run), train_lines(baseline)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert got[step] == expected[step], (step, got[step], expected[step])
