"""Configurations that cannot work fail at start with one clear line; non-finite steps are
skipped and a run of them stops training; export and load of real checkpoints."""

import json
import math
import subprocess
import sys

import pytest
import torch
from train_helpers import REPO, TINY, env, run_training, tiny_run_args, train_lines, with_flags

from data_prep import prepare_and_merge


@pytest.fixture(scope="module")
def data(wikitext_data):
    return wikitext_data


def train_cli(*args):
    return subprocess.run([sys.executable, "-m", "backpack_dist.train", *args], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)


def assert_clear_error(result, pattern, run_dir=None):
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and pattern in last, last
    assert "Traceback" not in result.stderr
    if run_dir is not None:
        assert not run_dir.exists(), "a failed start must leave nothing behind"


def base_args(data, run_dir, model="backpack-micro", extra=()):
    return with_flags({"--model": model, **dict(zip(TINY[::2], TINY[1::2], strict=True)), "--data_dir": str(data),
                       "--run_dir": str(run_dir), "--ds_config": str(REPO / "ds_configs" / "zero1.json"),
                       "--global_batch": "8", "--micro_batch": "2", "--wandb": "disabled"}, extra)


def test_unknown_model(data, tmp_path):
    args = base_args(data, tmp_path / "run", model="backpack-huge")
    assert_clear_error(train_cli(*args), "unknown model 'backpack-huge'", tmp_path / "run")


def test_global_batch_not_divisible(data, tmp_path):
    args = base_args(data, tmp_path / "run", extra=["--global_batch", "7"])
    assert_clear_error(train_cli(*args), "global batch 7 is not divisible", tmp_path / "run")


def test_missing_data_dir(tmp_path):
    args = base_args(tmp_path / "nowhere", tmp_path / "run")
    assert_clear_error(train_cli(*args), "has no train/ split", tmp_path / "run")


def test_data_vocabulary_larger_than_model(data, tmp_path):
    args = base_args(data, tmp_path / "run", extra=["--vocab_size", "1000"])
    assert_clear_error(train_cli(*args), "vocabulary (50257 ids) is larger than the model's (1000)", tmp_path / "run")


def test_unknown_flag_and_missing_ds_config(data, tmp_path):
    assert_clear_error(train_cli(*base_args(data, tmp_path / "run"), "--learning_rate", "1"), "--learning_rate")
    args = base_args(data, tmp_path / "run", extra=["--ds_config", str(tmp_path / "zero9.json")])
    assert_clear_error(train_cli(*args), "zero9.json not found", tmp_path / "run")


def test_a_bad_value_is_reported_once_under_the_deepspeed_launcher(data, tmp_path):
    result = run_training(2, base_args(data, tmp_path / "run", extra=["--dropout", "1.5"]))
    assert result.returncode != 0
    assert (result.stdout + result.stderr).count("error: --dropout must be in [0, 1)") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--lr", "abc"], "--lr must be a number, got 'abc'"),
    (["--max_steps", "1.5"], "--max_steps must be an integer, got '1.5'"),
    (["--precision", "fp16"], "--precision 'fp16': choose one of auto, bf16, fp32"),
    (["--compile", "yes"], "--compile is a switch: pass --compile (on), --nocompile or --compile false"),
    (["--betas", "0.9"], "--betas 0.9: expected two numbers"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--num_workers", "-1"], "--num_workers must be >= 0"),
    (["--max_bad_steps", "0"], "--max_bad_steps must be >= 1"),
    (["--warmup_steps", "1"], "--warmup_steps must be from 2"),
    (["--max_steps", "10", "--warmup_steps", "50"], "to --max_steps 10, got 50"),
    (["--micro_batch", "8", "--num_canonical_nodes", "100000"], "fewer than one micro batch per process"),
])
def test_bad_values_fail_at_start_and_leave_nothing(data, tmp_path, flags, message):
    assert_clear_error(train_cli(*base_args(data, tmp_path / "run", extra=flags)), message, tmp_path / "run")


def test_run_dir_that_is_a_file_or_a_bad_ds_config(data, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_clear_error(train_cli(*base_args(data, tmp_path / "file")), "is a file; pass a folder")
    bad = tmp_path / "ds.json"
    bad.write_text("[1, 2]")
    args = base_args(data, tmp_path / "run", extra=["--ds_config", str(bad)])
    assert_clear_error(train_cli(*args), "is not a JSON object", tmp_path / "run")


def test_non_finite_steps_are_skipped_then_stop(data, tmp_path):
    run = tmp_path / "run"
    result = run_training(1, tiny_run_args("transformer-micro", data, run, zero=0, steps=30,
                                           extra=["--lr", "1e9", "--max_bad_steps", "3", "--save_every", "100"]))
    assert result.returncode == 3, result.stderr[-2000:]
    assert "non-finite loss" in result.stderr and "update skipped" in result.stderr
    assert "after 3 non-finite steps in a row" in result.stderr
    assert not (run / "checkpoints").exists()  # nothing bad was saved


@pytest.mark.slow
@pytest.mark.parametrize("zero", [0, 3])
def test_export_and_run_changed_settings(data, tmp_path, zero, shared_data):
    """One plain process (no launcher), ZeRO 0 and 3: export equals the live checkpoint; a resume
    with a different model or other data is refused."""
    run = tmp_path / "run"
    result = run_training(1, tiny_run_args("backpack-micro", data, run, zero=zero, steps=6,
                                           extra=["--save_every", "3", "--wandb", "offline"]))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = train_lines(run)
    assert sorted(lines) == list(range(1, 7))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens_seen"} <= set(records[0])
    assert any("val_loss" in r and "val_ppl" in r for r in records)
    # Linear warmup over 2 steps, then linear decay to 0 over the rest (step s at iteration s - 1).
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs == pytest.approx([0.0, 1.5e-3, 3e-3, 2.25e-3, 1.5e-3, 0.75e-3])
    assert any((run / "wandb").glob("offline-run-*"))

    out = tmp_path / "export"
    command = [sys.executable, "-m", "backpack_dist.export", str(run), "--out", str(out), "--step", "3"]
    exported = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr[-2000:]
    from backpack_dist.pretrained import load_pretrained

    model_export, tok, info = load_pretrained(out)
    model_run, _, _ = load_pretrained(run / "checkpoints" / "step_00000003")
    assert info["step"] == 3 and info["model_name"] == "backpack-micro"
    x = torch.tensor([tok.encode_ordinary(" The history of the valley")])
    with torch.no_grad():
        assert torch.equal(model_export(x), model_run(x))

    changed = run_training(1, tiny_run_args("transformer-micro", data, run, zero=zero, steps=6))
    assert changed.returncode == 2 and "was started with different settings" in changed.stderr
    other_stage = run_training(1, tiny_run_args("backpack-micro", data, run, zero=2, steps=6))
    assert other_stage.returncode == 2, other_stage.stderr[-2000:]
    assert f"saved with ZeRO stage {zero}, fp32, this command asks for ZeRO stage 2, fp32" in other_stage.stderr
    other = tmp_path / "other-data"
    prepare_and_merge([shared_data / "tinyshakespeare" / "input.txt"], other, seq_len=64, val_fraction=0.05)
    other_data = run_training(1, tiny_run_args("backpack-micro", other, run, zero=zero, steps=6))
    assert other_data.returncode == 2 and "was trained on other data" in other_data.stderr

    # --json output stays parseable when the tool consolidates a DeepSpeed checkpoint itself.
    lookup = subprocess.run([sys.executable, "-m", "backpack_dist.senses", "lookup", "--checkpoint", str(run),
                             "--word", " valley", "--json"], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=120)
    assert lookup.returncode == 0, lookup.stderr[-2000:]
    assert json.loads(lookup.stdout)

    # Extending the run: its first new step already follows the new schedule (decay to step 8).
    longer = run_training(1, tiny_run_args("backpack-micro", data, run, zero=zero, steps=8))
    assert longer.returncode == 0, longer.stderr[-3000:]
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in r}
    assert [lrs[7], lrs[8]] == pytest.approx([1e-3, 0.5e-3])


@pytest.mark.slow
def test_remote_data_is_streamed_into_a_local_cache(data, tmp_path):
    """--remote: the data-prep output lives elsewhere (here a folder standing in for s3://...)
    and --data_dir is only the local cache that streaming fills."""
    cache, run = tmp_path / "cache", tmp_path / "run"
    result = run_training(1, tiny_run_args("transformer-micro", cache, run, zero=1, steps=4,
                                           extra=["--remote", str(data), "--save_every", "4"]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(train_lines(run)) == [1, 2, 3, 4]
    assert any((cache / "train").rglob("*.mds*")), "shards were not cached locally"


@pytest.mark.slow
@pytest.mark.parametrize("ds_config,precision,nprocs", [
    ("zero0", "fp32", 1), ("zero0", "bf16", 1), ("zero1", "fp32", 2), ("zero2", "bf16", 1), ("zero3", "fp32", 1),
    ("zero3", "bf16", 2), ("zero3_offload", "fp32", 1)])
def test_non_finite_gradients_with_a_finite_loss_are_skipped_and_counted(data, tmp_path, monkeypatch, ds_config,
                                                                          precision, nprocs):
    """Gradients made infinite (failpoint) on steps 3-4 and 6-8 while the loss stays finite: under
    every ZeRO stage and precision each update is skipped and reported, the weights do not move,
    and the third bad step in a row stops the run with exit 3."""
    from backpack_dist.pretrained import load_pretrained
    from backpack_dist.train.failpoints import NONFINITE_GRADS

    run = tmp_path / "run"
    args = tiny_run_args("backpack-micro", data, run, steps=10,
                         extra=["--ds_config", str(REPO / "ds_configs" / f"{ds_config}.json"), "--precision", precision,
                                "--max_bad_steps", "3", "--save_every", "2", "--keep", "5"])
    monkeypatch.setenv(NONFINITE_GRADS, "3,4,6,7,8")
    result = run_training(nprocs, args)
    assert result.returncode == 3, result.stderr[-3000:]
    for step, in_a_row in [(3, 1), (4, 2), (6, 1), (7, 2), (8, 3)]:
        assert f"step {step}: non-finite gradients" in result.stderr and f"({in_a_row} in a row)" in result.stderr
    assert "step 5: non-finite" not in result.stderr
    assert "stopping at step 8 after 3 non-finite steps in a row" in result.stderr
    lines = train_lines(run)
    assert sorted(lines) == list(range(1, 9)) and all(math.isfinite(lines[s]["loss"]) for s in lines)
    checkpoints = run / "checkpoints"
    weights = {s: load_pretrained(checkpoints / f"step_{s:08d}")[0].state_dict() for s in (2, 4, 6)}
    assert all(torch.equal(weights[2][k], weights[4][k]) for k in weights[2])  # steps 3, 4 skipped
    assert not all(torch.equal(weights[4][k], weights[6][k]) for k in weights[4])  # step 5 applied
