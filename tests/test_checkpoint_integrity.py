"""A COMPLETE checkpoint damaged after it was saved (truncated, a flipped byte, a file missing):
the sums in COMPLETE find it, a resume sets it aside and continues bit-exactly from the newest
intact one, read-only tools refuse it naming the intact steps. The rule is tested over the files
of real DeepSpeed checkpoints (ZeRO 0, 2 and 3, on 1 and 2 processes, saved once per session);
processes are started only for the resume paths and the tools' command lines."""

import json
import shutil
import subprocess
import sys

import pytest
from train_helpers import REPO, env, metrics, run_training, tiny_run_args, train_lines

from backpack_dist import checkpoint
from backpack_dist import checkpoint_integrity as integrity
from backpack_dist.train.run_dir import _newest_intact_step

RUNS = [(0, 1), (2, 2), (3, 2)]  # (ZeRO stage, processes)


def run_args(data, run, zero, steps=10):
    return tiny_run_args("backpack-micro", data, run, zero=zero, steps=steps, extra=["--save_every", "5"])


@pytest.fixture(scope="session")
def saved_runs(tmp_path_factory, shakespeare_data):
    """(zero, processes) -> a run dir with complete checkpoints at steps 5 and 10. Read only: copy it."""
    runs = {}
    for zero, procs in RUNS:
        run = tmp_path_factory.mktemp("integrity") / f"zero{zero}_p{procs}"
        result = run_training(procs, run_args(shakespeare_data, run, zero))
        assert result.returncode == 0, result.stderr[-3000:]
        runs[zero, procs] = run
    return runs


def copy_run(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def files_of(folder, kind):
    """The model or optimizer files of one checkpoint (ZeRO 0 keeps the optimizer in the model file)."""
    return sorted(p for p in folder.glob(f"*{kind}_states.pt"))


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGES = {"truncated": (truncate, "bytes, expected"), "flipped": (flip_byte, "contents changed"),
           "missing": (lambda p: p.unlink(), "is missing")}


@pytest.mark.parametrize("zero,procs", RUNS)
@pytest.mark.parametrize("kind", ["model", "optim"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_each_damage_to_each_file_is_found_and_named(saved_runs, tmp_path, zero, procs, kind, damage):
    run = copy_run(saved_runs[zero, procs], tmp_path)
    folder = checkpoint.checkpoints_dir(run) / checkpoint.tag_for_step(10)
    assert integrity.damage(folder) is None  # as saved: intact
    targets = files_of(folder, kind)
    if zero == 0 and kind == "optim":
        assert not targets and json.loads((folder / "COMPLETE").read_text())["files"]
        return  # ZeRO 0 keeps the optimizer in the model states file (tested as 'model'); asserted above
    assert len(targets) == (procs if kind == "optim" or zero == 3 else 1)
    spoil, says = DAMAGES[damage]
    spoil(targets[-1])
    problem = integrity.damage(folder)
    assert problem is not None and str(targets[-1]) in problem and says in problem

    hint = r"damaged: .*; use --step 5 or the folder .*step_00000005 \(intact steps: \[5\]\)"
    with pytest.raises(ValueError, match=hint):
        checkpoint.export_in_memory(run)
    assert folder.is_dir()  # read-only tools rename nothing
    assert _newest_intact_step(checkpoint.checkpoints_dir(run)) == 5
    assert not folder.exists() and (folder.parent / "step_00000010.damaged" / "COMPLETE").is_file()
    assert checkpoint.complete_steps(folder.parent) == [5]  # the set-aside one is no checkpoint any more
    assert (folder.parent / "latest").read_text().strip() == "step_00000005"


def test_none_intact_touches_nothing_and_names_every_problem(saved_runs, tmp_path):
    run = copy_run(saved_runs[2, 2], tmp_path)
    ckpts = checkpoint.checkpoints_dir(run)
    for step in (5, 10):
        truncate(files_of(ckpts / checkpoint.tag_for_step(step), "optim")[0])
    before = sorted(p.name for p in ckpts.iterdir())
    line = _newest_intact_step(ckpts)
    assert isinstance(line, str) and "step 10:" in line and "step 5:" in line and "\n" not in line
    assert sorted(p.name for p in ckpts.iterdir()) == before


def test_a_checkpoint_without_sums_is_still_read_with_a_note(saved_runs, tmp_path, capsys):
    run = copy_run(saved_runs[0, 1], tmp_path)
    marker = checkpoint.checkpoints_dir(run) / checkpoint.tag_for_step(10) / "COMPLETE"
    record = json.loads(marker.read_text())
    del record["files"]
    marker.write_text(json.dumps(record))
    state_dict, _, info, _ = checkpoint.export_in_memory(run)
    assert info["step"] == 10 and state_dict
    assert "without file sums" in capsys.readouterr().err
    assert _newest_intact_step(checkpoint.checkpoints_dir(run)) == 10


@pytest.mark.slow
@pytest.mark.parametrize("zero,procs,kind,spoil", [(2, 2, "optim", truncate), (3, 2, "model", flip_byte)])
def test_resume_sets_the_damaged_newest_aside_and_continues_bit_exactly(
        saved_runs, shakespeare_data, tmp_path, zero, procs, kind, spoil):
    run = copy_run(saved_runs[zero, procs], tmp_path)
    uninterrupted = train_lines(run)  # steps 1..10 of the run that saved both checkpoints
    ckpts = checkpoint.checkpoints_dir(run)
    spoil(files_of(ckpts / checkpoint.tag_for_step(10), kind)[0])
    result = run_training(procs, run_args(shakespeare_data, run, zero))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "checkpoint step 10 is damaged:" in out and "resuming from step 5" in out
    assert f"resumed from {ckpts / 'step_00000005'}" in out
    assert (ckpts / "step_00000010.damaged").is_dir()  # the evidence is kept
    assert checkpoint.complete_steps(ckpts) == [5, 10]  # and a fresh step 10 saved
    assert integrity.damage(ckpts / "step_00000010") is None
    resumed = train_lines(run)
    assert [m["step"] for m in metrics(run) if "loss" in m][-5:] == [6, 7, 8, 9, 10]
    assert resumed == uninterrupted


@pytest.mark.slow
def test_training_with_no_intact_checkpoint_exits_2_in_one_line(saved_runs, shakespeare_data, tmp_path):
    run = copy_run(saved_runs[0, 1], tmp_path)
    ckpts = checkpoint.checkpoints_dir(run)
    for step in (5, 10):
        flip_byte(files_of(ckpts / checkpoint.tag_for_step(step), "model")[0])
    result = run_training(1, run_args(shakespeare_data, run, 0))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "no intact checkpoint" in line]
    assert len(errors) == 1 and "step 10:" in errors[0] and "step 5:" in errors[0]
    assert checkpoint.complete_steps(ckpts) == [5, 10] and not list(ckpts.glob("*.damaged"))


@pytest.mark.slow
@pytest.mark.parametrize("tool", [["backpack_dist.export", "{run}", "--out", "{out}"],
                                  ["backpack_dist.eval", "--checkpoint", "{run}", "--tasks", "wikitext",
                                   "--wikitext_path", "{wikitext}", "--out", "{out}/results.json"]])
def test_export_and_eval_refuse_a_damaged_checkpoint_in_one_line(saved_runs, shared_data, tmp_path, tool):
    run = copy_run(saved_runs[2, 2], tmp_path)
    damaged = files_of(checkpoint.checkpoints_dir(run) / "step_00000010", "optim")[0]
    truncate(damaged)
    out = tmp_path / "out"
    argv = [part.format(run=run, out=out, wikitext=shared_data / "wikitext2" / "wiki.test.raw") for part in tool]
    result = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "damaged" in line]
    assert len(lines) == 1 and str(damaged) in lines[0] and "--step 5" in lines[0]
    assert not out.exists() or not any(out.iterdir())
    assert (damaged.parent / "COMPLETE").is_file() and not list(damaged.parent.parent.glob("*.damaged"))
