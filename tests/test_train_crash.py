"""Crash consistency: a 2-process run (ZeRO 1, 2, 3, the default loader worker) is SIGKILLed, every
process of the job at once, 10 times: mid-step, mid-validation, mid-save, just before and just
after its newest checkpoint is marked COMPLETE (failpoints pause one rank there), and at random
moments. After each kill the same command resumes from the newest complete checkpoint, never a
half-written one, and in the end every logged number equals the uninterrupted run's bit for bit.

The kill plan comes from one seed, printed (pytest -s) and named in every failure:
BACKPACK_CRASH_SEED=N replays it."""

import os
import random
import re
import time

import pytest
from crash_helpers import kill_job, resumed_from, wait_until
from train_helpers import metrics, run_training, start_training, tiny_run_args, train_lines, without_flag

from backpack_dist import checkpoint
from backpack_dist.train.failpoints import PAUSE, PAUSED

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("BACKPACK_CRASH_SEED", "16"))
KILLS = 10
STEPS, SAVE_EVERY, EVAL_EVERY = 36, 3, 4
FAILPOINTS = ("step", "validation", "save", "before_complete", "after_complete")


@pytest.fixture(scope="module")
def data(shakespeare_data):
    return shakespeare_data


def crash_args(data, run, zero):
    args = tiny_run_args("backpack-micro", data, run, zero=zero, steps=STEPS,
                         extra=["--dropout", "0.1", "--save_every", str(SAVE_EVERY), "--eval_every", str(EVAL_EVERY),
                                "--keep", "2"])
    return without_flag(args, "--num_workers")  # the default: one loader worker per rank


def val_lines(run) -> dict[int, float]:
    return {m["step"]: m["val_loss"] for m in metrics(run) if "val_loss" in m}


def logged_steps(run) -> list[int]:
    """Steps with a training line so far (a torn last line is skipped)."""
    path = run / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [int(m.group(1)) for m in re.finditer(r'^\{"step": (\d+), "loss"', text, re.M)]


def inode(path) -> int | None:
    return path.stat().st_ino if path.exists() else None


def next_step(after: int, phase: str) -> int | None:
    """The first step after `after` at which `phase` happens."""
    for s in range(after + 1, STEPS - 3):  # not near the end: the run must still be going when killed
        if phase in ("step", "random") or (phase == "validation" and s % EVAL_EVERY == 0) or \
                (phase in ("save", "before_complete", "after_complete") and s % SAVE_EVERY == 0):
            return s
    return None


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_ten_sigkills_resume_from_the_newest_complete_checkpoint_bit_exact(data, tmp_path, zero):
    rng = random.Random(SEED * 10 + zero)
    plan = list(FAILPOINTS) + ["random"] * (KILLS - len(FAILPOINTS))
    rng.shuffle(plan)
    print(f"\ncrash test ZeRO {zero}: seed {SEED} (replay with BACKPACK_CRASH_SEED={SEED}), plan {plan}")

    baseline = tmp_path / "baseline"
    result = run_training(2, crash_args(data, baseline, zero))
    assert result.returncode == 0, result.stderr[-3000:]

    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    args = crash_args(data, run, zero)
    expected_resume, history = None, []
    for attempt, kind in enumerate(plan):
        context = f"seed {SEED}, ZeRO {zero}, kill {attempt + 1} ({kind}), history {history}"
        start = checkpoint.latest_complete_step(ckpts) or 0
        target = next_step(start, kind) if kind != "random" else min(start + rng.randint(1, SAVE_EVERY + 1), STEPS - 4)
        assert target is not None, f"ran out of steps before {KILLS} kills; {context}"
        marker, log = tmp_path / f"paused-{attempt}", tmp_path / f"attempt-{attempt}.log"
        extra_env = {} if kind == "random" else {PAUSE: f"{kind}:{target}:{rng.choice([0, 1])}" if kind in (
            "step", "validation", "save") else f"{kind}:{target}:0", PAUSED: str(marker)}
        proc = start_training(2, args, log, extra_env)
        try:
            if kind == "random":  # somewhere in or after step `target`, whatever the job is doing then
                # This job's own line: on start it rewrites metrics.jsonl (a new inode) without the redone steps.
                old = inode(run / "metrics.jsonl")
                wait_until(lambda t=target, old=old: inode(run / "metrics.jsonl") not in (None, old)
                           and t in logged_steps(run), proc, f"step {target}; {context}")
                time.sleep(rng.uniform(0, 1.5))
            else:
                wait_until(marker.exists, proc, f"failpoint {extra_env[PAUSE]}; {context}")
        finally:
            kill_job(proc)
        # What the job left behind, read before the next attempt touches it.
        assert resumed_from(log.read_text()) == expected_resume, context
        complete = checkpoint.complete_steps(ckpts)
        if kind != "random":
            phase, step, rank = extra_env[PAUSE].split(":")
            assert marker.read_text().strip() == extra_env[PAUSE], context
            folder = ckpts / checkpoint.tag_for_step(int(step))
            if kind in ("save", "before_complete"):  # a half-written checkpoint that must not be taken
                assert folder.is_dir() and not (folder / checkpoint.COMPLETE).exists(), context
                assert int(step) not in complete
            elif kind == "after_complete":  # complete, though `latest` still names the one before
                latest = ckpts / "latest"  # absent before the first save
                assert int(step) in complete, context
                assert not latest.exists() or latest.read_text().strip() != folder.name, context
            elif kind == "validation":
                assert target in logged_steps(run) and target not in val_lines(run), context
            else:
                assert target not in logged_steps(run), context
        expected_resume = complete[-1] if complete else None
        history.append((kind, target, expected_resume))

    log = tmp_path / "final.log"
    result = run_training(2, args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert resumed_from(result.stdout) == expected_resume, f"seed {SEED}, history {history}"
    print(f"kills (kind, step, newest complete checkpoint after it): {history}")
    assert {kind for kind, _, _ in history} == {"random", *FAILPOINTS}
    got, expected = train_lines(run), train_lines(baseline)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in expected:
        assert got[step] == expected[step], (step, got[step], expected[step], f"seed {SEED}, history {history}")
    assert val_lines(run) == val_lines(baseline)
