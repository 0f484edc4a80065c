"""GPT-2 style pre-LayerNorm causal Transformer: the baseline LM and the Backpack's
contextualization network share this body."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .loss import DEFAULT_CHUNK_TOKENS, check_loss_name, cross_entropy


class MLP(nn.Module):
    """d -> hidden -> out with tanh-GELU (GPT-2's activation, used everywhere in the paper's code)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.c_fc = nn.Linear(d_in, d_hidden)
        self.c_proj = nn.Linear(d_hidden, d_out)
        self.c_proj.is_residual_projection = True

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.c_proj.is_residual_projection = True
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # The authors scale layer i's attention logits by 1/(i+1) on top of 1/sqrt(head_dim).
        layer_scale = layer_idx + 1 if cfg.scale_attn_by_inverse_layer_idx else 1
        self.scale = 1.0 / (math.sqrt(cfg.d_model // cfg.n_head) * layer_scale)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.scale, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.d_model, 4 * cfg.d_model, cfg.d_model)
        self.mlp_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_dropout(self.mlp(self.ln_2(x)))


class TransformerBody(nn.Module):
    """Token + learned position embeddings, n_layer blocks, final LayerNorm: h_1..h_n."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # Tied: also the output layer (and the Backpack sense network's input).
        self.wte = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def forward(self, input_ids):
        T = input_ids.shape[1]
        if T > self.wpe.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds the model's context of {self.wpe.num_embeddings}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


def init_weights(model: nn.Module, n_layer: int) -> None:
    """The spec's initialisation: N(0, 0.02) weights, zero biases, LayerNorm 1/0, and
    std 0.02/sqrt(2 n_layer) for every residual output projection."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * n_layer) if getattr(module, "is_residual_projection", False) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class LanguageModel(nn.Module):
    """Shared parts of both LMs: the tied embedding, the output projection (users see the real
    vocabulary; the loss multiplies by the padded matrix and masks the padding columns, so
    padded rows never get probability), and the loss."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.body = TransformerBody(cfg)
        # How, not what: runtime choices, never saved with the weights or the config.
        self.loss_impl = "auto"
        self.loss_chunk_tokens = DEFAULT_CHUNK_TOKENS

    def set_implementation(self, *, loss: str | None = None, loss_chunk_tokens: int | None = None):
        """Choose among exact implementations (see model/loss.py); returns the model."""
        if loss is not None:
            self.loss_impl = check_loss_name(loss)
        if loss_chunk_tokens is not None:
            if loss_chunk_tokens < 1:
                raise ValueError(f"loss_chunk_tokens must be at least 1, got {loss_chunk_tokens}")
            self.loss_chunk_tokens = int(loss_chunk_tokens)
        return self

    def implementation(self) -> dict:
        return {"loss": self.loss_impl, "loss_chunk_tokens": self.loss_chunk_tokens}

    @property
    def wte(self) -> nn.Embedding:
        return self.body.wte

    def output_embedding(self) -> torch.Tensor:
        return self.wte.weight[: self.config.vocab_size]

    def logits_from_hidden(self, o: torch.Tensor) -> torch.Tensor:
        return F.linear(o, self.output_embedding())

    def final_hidden(self, input_ids, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids, targets=None, **kwargs):
        """Next-token logits (B, T, vocab_size), or the mean cross-entropy when targets are given."""
        hidden = self.final_hidden(input_ids, **kwargs)
        if targets is None:
            return self.logits_from_hidden(hidden)
        # The padded width keeps the output matmuls on an aligned dimension (50264, not 50257).
        return cross_entropy(hidden.flatten(0, 1), self.wte.weight, targets.flatten(), impl=self.loss_impl,
                             chunk_tokens=self.loss_chunk_tokens, vocab_size=self.config.vocab_size)


class TransformerLM(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        init_weights(self, cfg.n_layer)

    def final_hidden(self, input_ids):
        return self.body(input_ids)
