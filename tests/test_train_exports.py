"""The weights an export holds are the weights that were trained, and the validation loss the
trainer logs is the loss of the validation split: for every ZeRO stage (and ZeRO-3 offload), the
val_loss logged at the last step equals the eval harness's OWT loss of the export on the same
data (an independent scoring path: its own reader, batching and model loading)."""

import json
import math
import subprocess
import sys

import pytest
from train_helpers import REPO, env, metrics, run_training, tiny_run_args

from data_prep import read_dataset_info


@pytest.fixture(scope="module")
def data(wikitext_data):
    return wikitext_data


def run_module(*args):
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("ds_config,nprocs", [("zero0", 1), ("zero1", 2), ("zero2", 1), ("zero3", 2),
                                              ("zero3_offload", 1)])
def test_logged_val_loss_equals_the_eval_harness_on_the_export(data, tmp_path, ds_config, nprocs):
    val_samples = read_dataset_info(data)["splits"]["val"]["samples"]
    run = tmp_path / "run"
    args = tiny_run_args("backpack-micro", data, run, steps=4,
                         extra=["--ds_config", str(REPO / "ds_configs" / f"{ds_config}.json"), "--save_every", "4",
                                "--eval_batches", str(val_samples)])  # micro batches: more than enough for all
    result = run_training(nprocs, args)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [m["val_loss"] for m in metrics(run) if m.get("step") == 4 and "val_loss" in m]
    assert len(logged) == 1

    export = tmp_path / "export"
    run_module("backpack_dist.export", str(run), "--out", str(export))
    results = tmp_path / "results.json"
    run_module("backpack_dist.eval", "--checkpoint", str(export), "--tasks", "owt", "--owt_val_dir", str(data),
               "--out", str(results))
    owt = json.loads(results.read_text())["results"]["owt"]
    assert owt["examples"] == val_samples
    assert math.log(owt["ppl"]) == pytest.approx(logged[0], abs=1e-5)
