"""Tiny exported models for the sense-tool tests: GPT-2's full vocabulary (so " nurse" is one
token) with d_model 32. Random weights give nearly uniform predictions, so the Backpack's
embedding and sense-network output are scaled up (logit std about 3): then predictions are
peaked and zeroing one sense visibly moves them."""

import torch
from common import TINY_SIZES

from backpack_dist.model import build_model
from backpack_dist.pretrained import save_pretrained

SIZES = dict(TINY_SIZES, seq_len=64, dropout=0.0)


def make_checkpoint(out_dir, family="backpack", seed=0):
    torch.manual_seed(seed)
    model = build_model(f"{family}-micro", **SIZES).eval()
    with torch.no_grad():
        model.wte.weight.mul_(10)
        if family == "backpack":
            model.sense_network.mlp_2.c_proj.weight.mul_(400)
    return save_pretrained(model.state_dict(), model.config, out_dir, model_name=f"{family}-micro")
