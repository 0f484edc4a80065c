"""Which gradient-accumulation dtype each ZeRO stage and precision gets (engine.deepspeed_config), and
what fp32 accumulation buys under ZeRO-2 with real engines (train/accum_precision.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backpack_dist.cli import UsageError
from backpack_dist.train.config import TrainConfig
from backpack_dist.train.engine import deepspeed_config


def accum_dtype(stage: int, precision: str, data_types=None):
    base = {"zero_optimization": {"stage": stage}, **({"data_types": data_types} if data_types else {})}
    cfg = TrainConfig(global_batch=8, micro_batch=2, precision=precision)
    return deepspeed_config(base, cfg, 1)["data_types"].get("grad_accum_dtype")


@pytest.mark.parametrize("stage", [2, 3])
def test_bf16_accumulates_in_fp32_under_zero_2_and_3(stage):
    assert accum_dtype(stage, "bf16") == "fp32"
    assert accum_dtype(stage, "fp32") is None  # fp32 weights: DeepSpeed accumulates in fp32 anyway


def test_zero0_and_zero1_bf16_stay_bf16_and_a_users_choice_is_kept():
    assert accum_dtype(0, "bf16") is None  # DeepSpeed has no fp32 accumulation for bf16 at stage 0
    assert accum_dtype(1, "bf16") is None  # its fp32 path (BF16_Optimizer) saves what zero_to_fp32 can't read
    assert accum_dtype(2, "bf16", {"grad_accum_dtype": "bf16"}) == "bf16"
    with pytest.raises(UsageError, match="ZeRO stage 0 with bf16 cannot accumulate gradients in fp32"):
        accum_dtype(0, "bf16", {"grad_accum_dtype": "fp32"})


def test_zero2_fp32_accumulation_is_closer_to_the_fp32_gradient_than_bf16(tmp_path):
    # Real DeepSpeed engines in one process (its own: it joins a gloo world of one); zero2-fp32 takes
    # the trainer's default config, so a default that accumulated in bf16 would tie the two.
    out = tmp_path / "accum.json"
    args = ["--settings", "zero2-bf16,zero2-fp32", "--accum", "16", "--micro_batch", "2", "--seq_len", "32"]
    result = subprocess.run([sys.executable, "-m", "backpack_dist.train.accum_precision", *args, "--out", str(out)],
                            cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["settings"]
    bf16, fp32 = rows["zero2-bf16"], rows["zero2-fp32"]
    assert (bf16["grad_accum_dtype"], fp32["grad_accum_dtype"]) == ("bfloat16", "float32")
    assert fp32["relative_error"] < bf16["relative_error"]
    # The bf16 forward/backward is common to both: the bf16 sums are what fp32 accumulation removes.
    assert fp32["accumulation_error"] < 1e-5 < 1e-3 < bf16["accumulation_error"]
