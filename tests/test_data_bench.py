"""The data-path benchmarks run end to end at a tiny size and report their figures (smoke tests:
no timing is asserted; the figures themselves are in docs/benchmarks.md)."""

import json
import subprocess
import sys

import pytest
from common import REPO

from backpack_dist.data_bench import consumption
from backpack_dist.model.config import model_config
from backpack_dist.model.flops import training_flops_per_token


def small_source(shared_data, tmp_path, docs=40):
    lines = (shared_data / "openwebtext_sample/webtext_gpt2_train_subset.jsonl").read_text().splitlines()[:docs]
    path = tmp_path / "webtext_head.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_consumption_is_half_an_h200_over_transformer_micro_training_flops():
    need = consumption()
    assert need["peak_bf16_flops"] == 989e12
    assert need["tokens_per_s"] == 0.5 * 989e12 / training_flops_per_token(model_config("transformer-micro"))


@pytest.mark.slow  # a data-prep job, then a loader worker per micro batch
def test_loader_benchmark_reports_tokens_per_s_next_to_the_h200_need(shared_data, tmp_path):
    out = tmp_path / "data_bench.json"
    cmd = [sys.executable, "-m", "backpack_dist.data_bench", "--mb", "0.4", "--micro_batch", "2,4",
           "--window_mtok", "0.004", "--reps", "2", "--source", str(small_source(shared_data, tmp_path)),
           "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert json.loads(result.stdout) == report
    assert report["need"]["model"] == "transformer-micro" and report["need"]["device"] == "H200"
    assert "load average" in report["machine"] and "data_bench" in report["command"]
    assert set(report["micro_batch"]) == {"2", "4"}
    for row in report["micro_batch"].values():
        assert row["tokens_per_s"] > 0 and row["tokens_per_worker_cpu_s"] > 0
        assert len(row["tokens_per_s_per_rep"]) == 2
        assert row["ratio_to_need"] == round(row["tokens_per_s"] / report["need"]["tokens_per_s"], 2)
    assert "of 2.55M tok/s needed (goal 10x)" in result.stderr


@pytest.mark.slow  # fresh interpreters that import streaming: the command, the probes, -X importtime
def test_prep_benchmark_reports_the_job_the_command_and_its_start_up(shared_data, tmp_path):
    cmd = [sys.executable, "-m", "data_prep.bench", "--mb", "0.3", "--reps", "1", "--workers", "1",
           "--part_mb", "0.1", "--source", str(small_source(shared_data, tmp_path))]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ratio_1_worker_to_raw"] > 0 and "load average" in report["machine"]
    whole = report["whole_command"]
    assert whole["job_tokens_per_s"] > 0 and whole["ratio_job_to_raw"] > 0 and whole["ratio_raw_to_wall"] > 0
    assert whole["wall_s"] > whole["job_s"] > 0
    assert set(whole["fixed_cost_s"]) == {"interpreter_start", "our_imports", "import_streaming", "tokenizer_load",
                                       "interpreter_exit"}
    breakdown = whole["import_streaming_breakdown_s"]
    assert breakdown["torch"] > 0 and breakdown["total_import_streaming"] >= breakdown["torch"]
