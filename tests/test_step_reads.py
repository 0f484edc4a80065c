"""The loop reads the device only at log steps and bad steps: the losses of the steps between
stay on the device and come back exact, and a bad step between log steps is still reported."""

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode
from train_helpers import run_training, tiny_run_args, train_lines

from backpack_dist.train.guards import BadSteps, StepLosses

HOST_READS = {"item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu"}


class CountHostReads(TorchFunctionMode):
    """Counts the tensor methods that copy a value to the host (on a GPU, a sync)."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def world_of_one(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_losses_stay_on_the_device_until_read_and_come_back_as_each_step_read_them(world_of_one):
    sums = [torch.tensor(x, dtype=torch.float32) for x in (8.123456, 7.5, float("nan"), 6.25)]
    losses = StepLosses(divisor=4)
    with CountHostReads() as counter:
        for s in sums[:3]:
            losses.add(s.clone())
    assert counter.reads == []
    with CountHostReads() as counter:
        read = losses.read()
    assert counter.reads == ["tolist"]  # one read for the three steps
    # as the loop read them before, one step at a time: all-reduce, .item(), then / (accum * world)
    one_by_one = []
    for s in sums[:3]:
        s = s.clone()
        torch.distributed.all_reduce(s)
        one_by_one.append(s.item() / 4)
    assert read[0] == one_by_one[0] and read[1] == one_by_one[1] and math.isnan(read[2]) and math.isnan(one_by_one[2])
    losses.add(sums[3])
    assert losses.read() == [6.25 / 4]  # only the steps since the last read


def test_bad_steps_count_skipped_updates_in_a_row():
    bad = BadSteps(limit=2)
    assert [bad.update(a) for a in (True, False, True, False, False)] == [False, True, False, True, True]
    assert bad.in_a_row == 2 and bad.exhausted
    assert BadSteps.describe(float("nan")) == "non-finite loss nan" and BadSteps.describe(2.0) == "non-finite gradients"


def test_a_run_logging_every_third_step_logs_what_one_logging_every_step_does(wikitext_data, tmp_path, monkeypatch):
    """Same losses and grad norms at steps 3 and 6; step 2's bad update (gradients made infinite)
    is reported though step 2 is not a log step, with the loss read there."""
    from backpack_dist.train.failpoints import NONFINITE_GRADS

    monkeypatch.setenv(NONFINITE_GRADS, "2")
    every, third = tmp_path / "every", tmp_path / "third"
    runs = {}
    for run, log_every in ((every, "1"), (third, "3")):
        result = run_training(1, tiny_run_args("backpack-micro", wikitext_data, run, steps=6,
                                               extra=["--log_every", log_every, "--save_every", "100"]))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "step 2: non-finite gradients" in result.stderr and "(1 in a row)" in result.stderr
        runs[log_every] = train_lines(run)
    assert sorted(runs["1"]) == [1, 2, 3, 4, 5, 6] and sorted(runs["3"]) == [3, 6]
    assert all(runs["3"][s] == runs["1"][s] for s in (3, 6))
