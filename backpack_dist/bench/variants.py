"""What the bench compares: the variants (model x implementations) and the token batches they run on."""

from __future__ import annotations

import dataclasses
import itertools

import torch

OPTIMIZERS = ("torch", "deepspeed", "engine")  # engine: the trainer's DeepSpeed engine step
TOKEN_DISTRIBUTIONS = ("zipf", "uniform")
N_BATCHES = 4  # distinct batches cycled through, resident on the device


@dataclasses.dataclass(frozen=True)
class Variant:
    model: str
    sense_sum: str | None  # None for Transformers
    loss: str
    compile: bool
    optimizer: str

    @property
    def family(self) -> str:
        return self.model.split("-")[0]

    @property
    def size(self) -> str:
        return self.model.split("-")[1]

    def label(self) -> str:
        parts = [self.model] + ([f"sense_sum={self.sense_sum}"] if self.sense_sum else [])
        parts += [f"loss={self.loss}", f"compile={self.compile}", f"optimizer={self.optimizer}"]
        return " ".join(parts)


def expand_variants(models, sense_sums, losses, compiles, optimizers) -> list[Variant]:
    out = []
    for model in models:
        senses = sense_sums if model.startswith("backpack") else [None]
        for sense, loss, comp, opt in itertools.product(senses, losses, compiles, optimizers):
            out.append(Variant(model, sense, loss, comp, opt))
    return out


def token_batches(vocab: int, batch: int, seq_len: int, distribution: str, device, seed: int):
    """(input, target) pairs of token ids. 'zipf' draws ids with frequency ~ 1/rank, like text, so
    that the share of distinct tokens (which sets the Backpack's sense-network work) is realistic."""
    g = torch.Generator().manual_seed(seed)
    shape = (N_BATCHES, batch, seq_len + 1)
    if distribution == "uniform":
        ids = torch.randint(0, vocab, shape, generator=g)
    else:
        weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
        ranks = torch.multinomial(weights, shape[0] * shape[1] * shape[2], replacement=True, generator=g)
        ids = torch.randperm(vocab, generator=g)[ranks].view(shape)
    ids = ids.to(device)
    distinct = sum(torch.unique(ids[i, :, :-1]).numel() for i in range(N_BATCHES)) / (N_BATCHES * batch * seq_len)
    return [(ids[i, :, :-1], ids[i, :, 1:]) for i in range(N_BATCHES)], distinct


def make_optimizer(name: str, model: torch.nn.Module, device: torch.device):
    from ..train.engine import weight_decay_groups

    groups = weight_decay_groups(model, 0.1)
    if name == "deepspeed":
        if device.type != "cuda":
            raise RuntimeError("DeepSpeed's FusedAdam needs a CUDA GPU")
        try:
            from deepspeed.ops.adam import FusedAdam
        except ImportError as e:
            raise RuntimeError(f"DeepSpeed is not installed ({e})") from e
        return FusedAdam(groups, lr=6e-4, betas=(0.9, 0.999), eps=1e-8, adam_w_mode=True)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.999), eps=1e-8, fused=fused or None,
                             foreach=None if fused else True)
