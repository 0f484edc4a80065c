"""`--tasks debias`: the paper's bias experiment (section 6) on any checkpoint.

The bias ratio is senses/bias.py's: for "When the nurse came into the room," and the like,
max(p(he)/p(she), p(she)/p(he)) of the next token, averaged over templates, then over the 40
professions. A Backpack is scored before and after zeroing one sense of the profession word;
a Transformer has no senses and gets the "before" row only (the paper's baseline, 7.02).

Which sense is zeroed follows a stated rule instead of the paper's hand-picked index (sense 10
of their Backpack-Small): the sense whose vocabulary projection moves the he/she logit gap the
most, i.e. the l maximising the mean over the professions' tokens p of |C(p)_l . (e_he - e_she)|
(e the tied output embedding). Zeroing sense l of a word removes exactly that term from every
later prediction, so this is the sense whose removal can change the ratio the most.
"""

from __future__ import annotations

import torch

from ..senses.bias import PROFESSIONS, PRONOUNS, TEMPLATES, bias_report
from ..senses.words import vocabulary_senses, word_tokens

SENSE_RULE = "argmax over senses l of the mean over profession tokens p of |C(p)_l . (e_he - e_she)|"


def load_debias(_flag, limit: int | None, loaded) -> tuple[list[str], dict]:
    """The paper's professions (the first --limit of them), checked against the tokenizer."""
    if any(len(word_tokens(loaded.enc, p)) != 1 for p in PRONOUNS):
        raise ValueError("debias: this tokenizer splits ' he' or ' she' into several tokens; the bias ratio "
                         "needs one token each (use a GPT-2-tokenized checkpoint)")
    professions = list(PROFESSIONS[:limit] if limit else PROFESSIONS)
    return professions, {"professions": len(professions), "templates": len(TEMPLATES)}


@torch.no_grad()
def gender_sense_scores(model, tokenizer, professions) -> torch.Tensor:
    """(k,): for each sense, the mean |C(p)_l . (e_he - e_she)| over the professions' tokens."""
    he, she = (word_tokens(tokenizer, p)[0] for p in PRONOUNS)
    E = model.output_embedding().float()
    direction = E[he] - E[she]
    ids = torch.tensor(sorted({t for p in professions for t in word_tokens(tokenizer, p)}))
    return (vocabulary_senses(model, ids) @ direction).abs().mean(dim=0).cpu()


def evaluate_debias(model, tokenizer, professions) -> dict:
    if not model.config.is_backpack:
        report = bias_report(model, tokenizer, professions)
        return {"bias_before": report["before"], "per_profession": report["professions"]}
    scores = gender_sense_scores(model, tokenizer, professions)
    sense = int(scores.argmax())
    report = bias_report(model, tokenizer, professions, sense=sense, factor=0.0)
    return {"bias_before": report["before"], "bias_after": report["after"], "sense": sense,
            "sense_rule": SENSE_RULE, "sense_scores": [round(float(s), 6) for s in scores],
            "per_profession": report["professions"]}
