"""python -m backpack_dist.plot: validation loss against tokens seen from runs' metrics.jsonl files
(written here the way training writes them), as a PNG that decodes and shows both families."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from backpack_dist.plot import main, read_curve

TOKENS_PER_STEP = 8 * 64


def write_run(folder, model, *, steps=30, log_every=3, eval_every=10, val=True, n_senses=16, offset=0.0):
    """A run dir as training leaves it: config.json and metrics.jsonl with training lines every
    log_every steps and val_loss lines every eval_every steps (not always on a training line's step)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": model, "n_senses": n_senses, "global_batch": 8}))
    lines = []
    for step in range(1, steps + 1):
        if step % log_every == 0:
            lines.append({"step": step, "loss": 5.0 - step / 10, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1e3,
                          "mfu": None, "tokens_seen": step * TOKENS_PER_STEP})
        if val and step % eval_every == 0:
            lines.append({"step": step, "val_loss": 5.2 - step / 12 + offset, "val_ppl": 100.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_plot_writes_a_png_of_both_families_per_size(tmp_path, capsys):
    runs = [write_run(tmp_path / name, name, offset=i * 0.1) for i, name in
            enumerate(["backpack-micro", "transformer-micro", "backpack-mini", "transformer-mini"])]
    runs.append(write_run(tmp_path / "ablation-k4", "backpack-mini", n_senses=4, offset=0.5))
    out = tmp_path / "loss.png"
    main([*map(str, runs), "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}: 5 run(s)") and "ablation-k4 (k=4) 3 validations" in printed
    with Image.open(out) as image:
        image.load()
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert image.format == "PNG" and pixels.shape[1] > 2 * pixels.shape[0]  # two panels side by side
    assert pixels.std() > 10  # not blank
    # Backpack curves in tab:blue (31, 119, 180), Transformer curves in tab:orange (255, 127, 14).
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(pixels - colour).sum(axis=2) < 30).sum() > 200, colour


def test_validation_tokens_come_from_the_training_lines(tmp_path):
    curve = read_curve(write_run(tmp_path / "run", "backpack-micro"))
    # step 30 has a training line; steps 10 and 20 do not (logged every 3): step x tokens per step
    assert curve.tokens == [10 * TOKENS_PER_STEP, 20 * TOKENS_PER_STEP, 30 * TOKENS_PER_STEP]
    assert curve.family == "backpack" and curve.size == "micro" and len(curve.val_loss) == 3


@pytest.mark.parametrize("make, message", [
    (lambda d: write_run(d / "early", "backpack-micro", val=False), "early/metrics.jsonl has no val_loss lines yet"),
    (lambda d: d / "missing", "missing: no such run folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "empty has no metrics.jsonl"),
])
def test_bad_runs_give_one_line_and_no_png(tmp_path, capsys, make, message):
    good = write_run(tmp_path / "good", "transformer-micro")
    bad = make(tmp_path)
    out = tmp_path / "loss.png"
    with pytest.raises(SystemExit) as exit_info:
        main([str(good), str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists() and not list(tmp_path.glob("*.png"))


def test_bad_output_is_refused_before_reading(tmp_path, capsys):
    run = write_run(tmp_path / "run", "backpack-micro")
    for out, message in ((tmp_path / "loss.jpg", "give a file name ending in .png"),
                         (tmp_path / "no" / "loss.png", "does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(run), "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err
        assert not out.exists()
