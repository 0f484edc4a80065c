"""The first-contact command end to end on the CPU at tiny shapes (--dry_run): every stage runs in its
own process and leaves its figures and a status in the summary."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ["environment", "logits", "engine", "sense_sum", "memory", "resume"]


@pytest.mark.slow
def test_first_contact_dry_run_writes_every_stage_and_a_summary(tmp_path):
    out = tmp_path / "fc"
    result = subprocess.run([sys.executable, "-m", "backpack_dist.bench", "--first_contact", "--dry_run",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["stage"] for r in summary["stages"]] == STAGES
    assert all(r["status"] == "ok" and r["figures"] > 0 for r in summary["stages"]), summary
    assert "| resume | ok |" in (out / "summary.md").read_text()
    figures = {s: json.loads((out / f"{s}.json").read_text())["figures"] for s in STAGES}
    assert figures["environment"][1]["matmul_ceiling"]["flops_per_s"] > 0
    assert "deepspeed" in figures["environment"][0]["versions"]
    assert all(f["max_abs_error"] == 0.0 for f in figures["logits"])  # CPU against CPU in a dry run
    assert [f["model"] for f in figures["engine"]] == ["transformer-small", "backpack-small"]
    assert all(f["error"] is None and f["zero_stage"] == 2 and f["tokens_per_s"] > 0 for f in figures["engine"])
    from backpack_dist.model.sense_sum import SENSE_SUM_IMPLEMENTATIONS

    assert [f["sense_sum"] for f in figures["sense_sum"]] == list(SENSE_SUM_IMPLEMENTATIONS)
    assert all(f["backends"]["MATH"] == "ok" for f in figures["sense_sum"] if f["error"] is None)
    ratios = {f["sense_sum"]: f["executed_over_defined_flops"] for f in figures["sense_sum"]}
    assert ratios["sdpa"] == 1.0 and ratios["chunked"] > 1.0 and ratios["chunked"] >= ratios["chunked_wide"]
    final = figures["resume"][-1]
    assert final["lines_equal"] and final["weights_equal"] and final["resumed_from"] == 15


def test_first_contact_needs_an_out_folder():
    result = subprocess.run([sys.executable, "-m", "backpack_dist.bench", "--first_contact"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--out DIR" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
