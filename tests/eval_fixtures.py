"""Shared by the eval tests: tiny GPT-2-vocabulary models (random, and trained in-process for a
few dozen AdamW steps on real text) exported with save_pretrained, and the brute-force
references every batched metric is checked against (one example at a time, no batching)."""

from __future__ import annotations

import math

import torch
from common import TINY_SIZES

from backpack_dist.model import build_model
from backpack_dist.pretrained import save_pretrained
from backpack_dist.tokenizer import load_tokenizer

SEQ_LEN = 64
TINY = dict(TINY_SIZES, seq_len=SEQ_LEN, dropout=0.0)  # GPT-2 vocabulary


def _train(model, tokens: torch.Tensor, steps: int = 30, batch: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(tokens) - SEQ_LEN - 1, (batch,), generator=gen)
        chunk = torch.stack([tokens[s:s + SEQ_LEN + 1] for s in starts.tolist()])
        loss = model(chunk[:, :-1], targets=chunk[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def build_eval_models(root, shared_data) -> dict:
    """{"backpack": dir, "transformer": dir, "random": dir} of exported tiny models under root,
    built once (the two trained on OpenWebText text for 30 steps)."""
    dirs = {name: root / name for name in ("backpack", "transformer", "random")}
    if all((d / "config.json").is_file() for d in dirs.values()):
        return dirs
    enc = load_tokenizer("gpt2")
    text = (shared_data / "openwebtext_sample" / "owt_first_docs_concat.txt").read_text(encoding="utf-8")
    tokens = torch.tensor(enc.encode_ordinary(text))
    for family in ("backpack", "transformer"):
        torch.manual_seed(0)
        model = _train(build_model(f"{family}-micro", **TINY), tokens)
        save_pretrained(model.state_dict(), model.config, dirs[family], model_name=f"{family}-micro", step=30)
    torch.manual_seed(1)
    model = build_model("backpack-micro", **TINY).eval()
    save_pretrained(model.state_dict(), model.config, dirs["random"], model_name="backpack-micro", step=0)
    return dirs


@torch.no_grad()
def brute_loglikelihood(model, context: list[int], continuation: list[int], eot: int) -> tuple[float, bool]:
    """One request on its own: full-vocabulary log-softmax in float64 over the model's logits."""
    tokens = ((context or [eot]) + continuation)[-(model.config.seq_len + 1):]
    logits = model(torch.tensor([tokens[:-1]]))[0].double()
    logprobs = logits.log_softmax(-1)
    n = len(continuation)
    positions = range(len(tokens) - 1 - n, len(tokens) - 1)
    total = sum(float(logprobs[p, t]) for p, t in zip(positions, continuation, strict=True))
    greedy = all(int(logits[p].argmax()) == t for p, t in zip(positions, continuation, strict=True))
    return total, greedy


@torch.no_grad()
def brute_rolling(model, tokens: list[int], eot: int) -> float:
    """Each token's log-probability, predicted by the window it falls in: windows of seq_len
    predicted tokens; a full window sees only the token before it, the last one is filled with
    earlier tokens up to seq_len inputs."""
    L = model.config.seq_len
    total = 0.0
    padded = [eot] + tokens
    for start in range(0, len(tokens), L):
        end = min(start + L, len(tokens))
        inputs = padded[max(0, end - L):end]  # the last input predicts tokens[end - 1]
        logprobs = model(torch.tensor([inputs]))[0].double().log_softmax(-1)
        offset = len(inputs) - (end - start)
        for i, p in enumerate(range(start, end)):
            total += float(logprobs[offset + i, tokens[p]])
    return total


def ppl(total_nll: float, count: int) -> float:
    return math.exp(total_nll / count)
