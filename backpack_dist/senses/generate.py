"""Sampling, optionally steered: a per-vocabulary-item table of sense scales (vocab_size, k) is
looked up for every token of the running sequence and passed as `sense_scales`.

Topic control (paper section 6): score sense l of vocabulary item v by the projection of C(v)_l
onto the topic words' mean embedding u, i.e. how much that sense pushes up the topic words'
logits. Senses far above the rest (z-score >= threshold, and a positive projection) are
multiplied by `strength` while generating, so topic words gain logit wherever such senses are
in context.
"""

from __future__ import annotations

import torch

from .words import SenseToolError, encode_text, require_backpack, token_text, vocabulary_senses, word_tokens


def split_topic_words(topic_words) -> list[str]:
    """"science,physics" (or a list of words) -> the topic words."""
    if isinstance(topic_words, str):
        return [w for w in topic_words.split(",") if w.strip()]
    return [str(w) for w in topic_words]


def topic_token_ids(tokenizer, topic_words) -> list[int]:
    ids = sorted({t for w in split_topic_words(topic_words) for t in word_tokens(tokenizer, w)})
    if not ids:
        raise SenseToolError("no topic words given: pass --topic 'word1,word2,...'")
    return ids


@torch.no_grad()
def topic_sense_scores(model, topic_ids: list[int], chunk: int = 4096) -> torch.Tensor:
    """(vocab_size, k): C(v)_l . u, with u the mean output embedding of the topic tokens."""
    require_backpack(model, "topic control")
    E = model.output_embedding().float()
    u = E[torch.tensor(topic_ids, device=E.device)].mean(0)
    vocab = torch.arange(model.config.vocab_size, device=E.device)
    return torch.cat([vocabulary_senses(model, part) @ u for part in vocab.split(chunk)]).cpu()


def topic_scale_table(scores: torch.Tensor, strength: float = 3.0, threshold: float = 2.0) -> torch.Tensor:
    """Scale factors (vocab_size, k): `strength` for topic senses, 1 elsewhere."""
    if strength <= 0:
        raise SenseToolError(f"topic strength must be positive, got {strength}")
    z = (scores - scores.mean()) / scores.std().clamp_min(1e-12)
    selected = (z >= threshold) & (scores > 0)
    return torch.where(selected, torch.tensor(float(strength)), torch.tensor(1.0))


def topic_control(model, tokenizer, topic_words, strength: float = 3.0, threshold: float = 2.0):
    """(scale table, summary) for a bag of topic words."""
    topic_ids = topic_token_ids(tokenizer, topic_words)
    scores = topic_sense_scores(model, topic_ids)
    table = topic_scale_table(scores, strength, threshold)
    best = scores.flatten().topk(min(10, scores.numel())).indices
    k = scores.shape[1]
    summary = {"topic_tokens": [token_text(tokenizer, t) for t in topic_ids], "topic_ids": topic_ids,
               "senses_upweighted": int((table != 1).sum()),
               "strongest": [{"token": token_text(tokenizer, int(i) // k), "sense": int(i) % k,
                              "score": float(scores.flatten()[i])} for i in best]}
    return table, summary


@torch.no_grad()
def sample(model, tokenizer, prompt: str, max_new_tokens: int = 40, temperature: float = 1.0, top_k: int = 50,
           seed: int = 0, scale_table: torch.Tensor | None = None) -> dict:
    """Sample a continuation (stops at end-of-text). With `scale_table` (vocab_size, k), every
    position j gets sense scales scale_table[x_j]."""
    if max_new_tokens < 1:
        raise SenseToolError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise SenseToolError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k < 0:
        raise SenseToolError(f"top_k must be >= 0 (0 samples from the whole vocabulary), got {top_k}")
    if scale_table is not None:
        require_backpack(model, "steered generation")
    context = model.config.seq_len
    ids = encode_text(tokenizer, prompt, context)
    device = model.wte.weight.device
    generator = torch.Generator().manual_seed(seed)
    new_ids = []
    for _ in range(max_new_tokens):
        window = torch.tensor([(ids + new_ids)[-context:]], device=device)
        kwargs = {} if scale_table is None else {"sense_scales": scale_table[window.cpu()].to(device)}
        logits = model(window, **kwargs)[0, -1].float().cpu()
        if not torch.isfinite(logits).all():  # huge sense scales overflow; sampling would fail obscurely
            cause = "the model's weights" if scale_table is None else "the sense scales (use a smaller --strength)"
            raise SenseToolError(f"the model's output is not finite (overflow or NaN) because of {cause}")
        if temperature == 0:
            next_id = int(logits.argmax())
        else:
            if top_k:
                kth = logits.topk(min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = (logits / temperature).softmax(-1)
            if not torch.isfinite(probs).all():
                raise SenseToolError(f"temperature {temperature:g} is too small to sample with; use 0 for greedy "
                                     "decoding")
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        if next_id == tokenizer.eot_token:
            break
        new_ids.append(next_id)
    return {"prompt": prompt, "completion": tokenizer.decode(new_ids), "ids": new_ids}


def topic_fraction(ids: list[int], topic_ids: list[int]) -> float:
    """Share of generated tokens that are topic tokens."""
    return sum(t in set(topic_ids) for t in ids) / max(1, len(ids))
