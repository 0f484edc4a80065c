"""The lr schedules (backpack_dist/train/schedule.py): each against its closed form, linear against
DeepSpeed's WarmupDecayLR to the bit, and a WSD decay that a raised --max_steps does not re-stretch."""

import math

import pytest
import torch

from backpack_dist.cli import UsageError
from backpack_dist.train.config import TrainConfig
from backpack_dist.train.schedule import LRSchedule, Schedule, lr_at


def schedule(**flags):
    return Schedule.from_config(TrainConfig(**flags))


def optimizer():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))], lr=1.0)


@pytest.mark.parametrize("steps,warmup,lr", [(6, None, 3e-3), (100_000, None, 6e-4), (37, 5, 1e-3), (8, 8, 0.1)])
def test_linear_is_deepspeeds_warmup_decay_lr_to_the_bit(steps, warmup, lr):
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    cfg = TrainConfig(max_steps=steps, warmup_steps=warmup, lr=lr)
    theirs = WarmupDecayLR(optimizer(), total_num_steps=steps, warmup_min_lr=0.0, warmup_max_lr=lr,
                           warmup_num_steps=cfg.resolved_warmup_steps, warmup_type="linear")
    ours = LRSchedule(optimizer(), Schedule.from_config(cfg))
    theirs.step()  # the old setup(): iteration 0 before the first step
    for t in range(0, min(steps + 2, 3000)):
        assert ours.optimizer.param_groups[0]["lr"] == theirs.optimizer.param_groups[0]["lr"], t
        assert ours.last_epoch == theirs.last_batch_iteration == t
        ours.optimizer.step()  # as DeepSpeed does before each scheduler step
        ours.step(), theirs.step()
    # A checkpoint of either loads into the other.
    assert set(theirs.state_dict()) <= set(ours.state_dict())


def test_cosine_closed_form():
    s = schedule(max_steps=110, warmup_steps=10, lr=1e-3, min_lr=1e-4, schedule="cosine")
    assert [lr_at(s, t) for t in (0, 5)] == pytest.approx([1e-4, 1e-4 + 0.5 * 9e-4])
    for t in range(10, 110):
        assert lr_at(s, t) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * (t - 10) / 100)), rel=1e-12)
    assert lr_at(s, 60) == pytest.approx(5.5e-4) and lr_at(s, 110) == pytest.approx(1e-4)


@pytest.mark.parametrize("shape,g", [("linear", lambda p: 1 - p), ("sqrt", lambda p: 1 - math.sqrt(p)),
                                     ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p)))])
def test_wsd_closed_form(shape, g):
    s = schedule(max_steps=100, warmup_steps=10, lr=2e-3, decay_steps=20, decay_shape=shape, schedule="wsd")
    assert s.decay_start == 80
    assert lr_at(s, 5) == pytest.approx(1e-3)
    assert all(lr_at(s, t) == 2e-3 for t in range(10, 81))
    for t in range(80, 101):
        assert lr_at(s, t) == pytest.approx(2e-3 * g((t - 80) / 20), rel=1e-12, abs=1e-18), t


def test_raising_max_steps_moves_a_decay_not_begun_and_keeps_one_begun():
    old = LRSchedule(optimizer(), schedule(max_steps=100, warmup_steps=10, decay_steps=20, schedule="wsd"))
    longer = dict(max_steps=200, warmup_steps=10, decay_steps=20, schedule="wsd")
    for iteration, expected_start in ((50, 180), (79, 180), (80, 80), (95, 80)):
        old.last_epoch = iteration
        resumed = LRSchedule(optimizer(), schedule(**longer))
        resumed.load_state_dict(old.state_dict())
        assert resumed.schedule.decay_start == expected_start
        assert resumed.state_dict()["decay_start"] == expected_start  # and the next checkpoint records it
        assert resumed.get_lr()[0] == lr_at(resumed.schedule, iteration)
    # The begun decay ends where it would have (iteration 100), then the lr stays at --min_lr.
    assert lr_at(resumed.schedule, 90) == pytest.approx(3e-4) and lr_at(resumed.schedule, 150) == 0.0


@pytest.mark.parametrize("flags,message", [
    (dict(min_lr=1e-2), "--min_lr 0.01 is above the peak --lr"),
    (dict(decay_steps=5), "--decay_steps and --decay_shape belong to --schedule wsd, not linear"),
    (dict(schedule="wsd", max_steps=10, warmup_steps=5, decay_steps=6), "exceed --max_steps 10"),
    (dict(schedule="wsd", decay_steps=0), "--decay_steps"),
])
def test_bad_schedule_flags(flags, message):
    with pytest.raises(UsageError, match=message):
        TrainConfig(**flags)


def test_init_from_run_at_step_names_its_checkpoint(tmp_path):
    from backpack_dist.train.init_from import source_path

    (tmp_path / "run" / "checkpoints" / "step_00000005").mkdir(parents=True)
    assert source_path(f"{tmp_path}/run@5") == str(tmp_path / "run" / "checkpoints" / "step_00000005")
    with pytest.raises(UsageError, match="the run has step_00000005"):
        source_path(f"{tmp_path}/run@7")
    assert TrainConfig(schedule="wsd", warmup_steps=0, decay_steps=3, max_steps=3).resolved_warmup_steps == 0


@pytest.mark.slow
def test_wsd_run_extended_mid_decay_then_branched_from_its_stable_phase(shakespeare_data, tmp_path):
    """Real runs (ZeRO 1): the logged lr follows lr_at; a resume with a raised --max_steps keeps the
    begun decay (then --min_lr); --init_from RUN@STEP decays from the branch's first step."""
    from train_helpers import TINY, run_training, tiny_run_args, without_flag

    def lrs(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["lr"] for r in map(__import__("json").loads, lines) if "lr" in r}

    run = tmp_path / "run"
    wsd = ["--schedule", "wsd", "--decay_steps", "2", "--min_lr", "1e-4", "--save_every", "3", "--keep", "5"]
    first = run_training(1, tiny_run_args("backpack-micro", shakespeare_data, run, zero=1, steps=6, extra=wsd))
    assert first.returncode == 0, first.stderr[-3000:]
    s = schedule(max_steps=6, warmup_steps=2, lr=3e-3, min_lr=1e-4, schedule="wsd", decay_steps=2)
    assert lrs(run) == {step: lr_at(s, step - 1) for step in range(1, 7)}  # the same floats
    assert [lrs(run)[k] for k in (2, 4, 6)] == pytest.approx([1.55e-3, 3e-3, 1.55e-3])
    # Resumed from step 6 (iteration 6, in the decay that began at iteration 4): not re-stretched to 10.
    longer = run_training(1, tiny_run_args("backpack-micro", shakespeare_data, run, zero=1, steps=10, extra=wsd))
    assert longer.returncode == 0 and "resumed from" in longer.stdout, longer.stderr[-3000:]
    assert [lrs(run)[k] for k in range(7, 11)] == [1e-4] * 4

    branch = tmp_path / "branch"
    decay = ["--schedule", "wsd", "--warmup_steps", "0", "--decay_steps", "3", "--init_from", f"{run}@3"]
    args = tiny_run_args("backpack-micro", shakespeare_data, branch, zero=1, steps=3, extra=decay)
    for flag in TINY[::2]:  # the sizes come from --init_from
        args = without_flag(args, flag)
    result = run_training(1, args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(lrs(branch).values()) == pytest.approx([3e-3, 2e-3, 1e-3])
