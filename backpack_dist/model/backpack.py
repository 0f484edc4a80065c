"""The Backpack LM: non-contextual sense vectors mixed by contextual, causal sense weights.

logits_i = E o_i,  o_i = sum_l sum_{j<=i} alpha_l[i, j] C(x_j)_l   (no final LayerNorm, no 1/k).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .sense_sum import causal_softmax_fp32, check_sense_sum_name, sense_sum
from .transformer import MLP, LanguageModel, init_weights

__all__ = ["BackpackLM", "SenseNetwork", "causal_softmax_fp32"]


def distinct_tokens(input_ids):
    """(distinct ids, inverse index) of a batch: what sense_vectors gathers by. On a GPU tensor
    torch.unique waits for the device, so the loop calls this on the CPU batch."""
    return torch.unique(input_ids, return_inverse=True)


class SenseNetwork(nn.Module):
    """C(x) from the word embedding alone: a residual block without attention, then an MLP to
    k*d. The extra LayerNorms and residual are in the authors' code (the paper's appendix calls
    them accidental); we keep them for fidelity."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, k = cfg.d_model, cfg.n_senses
        self.n_senses = k
        self.drop = nn.Dropout(cfg.dropout)
        self.ln_0 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.ln_1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp_1 = MLP(d, 4 * d, d)
        self.ln_2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp_2 = MLP(d, 4 * d, k * d)  # no dropout after it

    def forward(self, e):
        r0 = self.drop(e)
        r1 = self.drop(self.ln_0(r0)) + r0
        r2 = self.drop(self.mlp_1(self.ln_1(r1))) + r1
        c = self.mlp_2(self.ln_2(r2))
        return c.unflatten(-1, (self.n_senses, -1))  # (..., k, d)


class BackpackLM(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.sense_network = SenseNetwork(cfg)
        self.sense_qk = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        init_weights(self, cfg.n_layer)
        self.sense_sum_impl = "auto"

    def set_implementation(self, *, sense_sum: str | None = None, **loss_options):
        """Also sense_sum: one of model/sense_sum.py's exact implementations."""
        if sense_sum is not None:
            self.sense_sum_impl = check_sense_sum_name(sense_sum)
        return super().set_implementation(**loss_options)

    def implementation(self) -> dict:
        return {"sense_sum": self.sense_sum_impl, **super().implementation()}

    def sense_vectors(self, input_ids, unique_tokens=None):
        """C(x_j) for every position: (B, T, k, d). Computed once per distinct token id and
        gathered, which is exact because C depends on the token id alone. (In training, one
        dropout mask is then shared by all positions of a token.) unique_tokens: distinct_tokens()
        of these ids, computed on the CPU copy by the training loop so that forward has no
        GPU->CPU sync; without it it is computed here."""
        unique_ids, inverse = unique_tokens if unique_tokens is not None else distinct_tokens(input_ids)
        return self.sense_network(self.wte(unique_ids))[inverse]

    def _queries_keys(self, input_ids):
        h = self.body(input_ids)
        B, T, d = h.shape
        q, k = self.sense_qk(h).split(d, dim=-1)
        n = self.config.n_senses
        return (t.view(B, T, n, d // n).transpose(1, 2) for t in (q, k))

    def sense_weights(self, input_ids):
        """alpha: (B, k, T, T), causal, each row sums to 1 (fp32)."""
        return causal_softmax_fp32(*self._queries_keys(input_ids))

    def final_hidden(self, input_ids, sense_scales=None, unique_tokens=None):
        """o (B, T, d). sense_scales (B, T, k), if given, multiplies alpha[l, :, j] for every
        position j and sense l (the paper's sense-weight intervention)."""
        q, k = self._queries_keys(input_ids)
        senses = self.sense_vectors(input_ids, unique_tokens)
        if sense_scales is not None:
            # Scaling column j of alpha_l is the same as scaling C(x_j)_l: o is linear in both.
            senses = senses * sense_scales.unsqueeze(-1).to(senses.dtype)
        return sense_sum(q, k, senses.transpose(1, 2).to(q.dtype), impl=self.sense_sum_impl)
