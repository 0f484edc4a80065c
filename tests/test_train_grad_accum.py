"""Which gradient-accumulation dtype each ZeRO stage and precision gets (engine.deepspeed_config)."""

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
