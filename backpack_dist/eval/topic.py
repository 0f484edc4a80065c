"""`--tasks topic`: the paper's topic control (section 6) as a score.

For each topic (a bag of words) and each fixed prompt, one seeded sample is drawn from the
model as it is and one with the topic's senses up-weighted (senses/generate.py's topic_control:
senses whose vocabulary projection scores high on the bag, x `STRENGTH`). Two figures:

- topic accuracy: the share of generations that use a word of the topic's bag (whole word,
  case-insensitive, in the generated text only; bag words the prompt already holds do not
  count). The paper scores topic with a trained topic classifier (PPLM's); this rule needs no
  model beyond the one scored, so it reads lower and is comparable only between our rows.
- fluency: the perplexity of the generated tokens under the unmodified model (the paper uses
  a separate, larger LM). Steering that wrecks the text shows up as a higher figure.

A Transformer has no senses: it gets the unsteered row only, the baseline.
"""

from __future__ import annotations

import math
import re

from ..senses.generate import sample, topic_control

TOPICS = {
    "science": ("science", "scientist", "scientists", "physics", "chemistry", "biology", "research", "theory",
                "experiment", "laboratory", "energy", "universe"),
    "sports": ("sports", "game", "team", "player", "players", "football", "basketball", "coach", "season",
               "league", "score", "championship"),
    "food": ("food", "eat", "cooking", "restaurant", "meal", "dinner", "chicken", "bread", "cheese", "recipe",
             "delicious", "kitchen"),
    "politics": ("politics", "government", "president", "election", "vote", "party", "congress", "senator",
                 "policy", "campaign", "democrats", "republicans"),
    "military": ("military", "army", "war", "soldiers", "troops", "weapons", "battle", "navy", "forces",
                 "defense", "attack", "officer"),
    "music": ("music", "song", "songs", "band", "album", "guitar", "singer", "concert", "rock", "jazz",
              "piano", "sound"),
}
PROMPTS = ("The", "In the beginning", "It was a day when", "My favourite thing is", "Here is what happened:")
NEW_TOKENS = 30
STRENGTH, THRESHOLD = 3.0, 2.0  # senses/generate.py's defaults
SEED = 0
PAPER = {"backpack-small": {"plain": 0.074, "steered": 0.353}}


def load_topic(_flag, limit: int | None, loaded) -> tuple[list[tuple[str, str]], dict]:
    """(topic, prompt) pairs, topic by topic; --limit keeps the first N prompts of each topic."""
    prompts = PROMPTS[:limit] if limit else PROMPTS
    pairs = [(topic, prompt) for topic in TOPICS for prompt in prompts]
    return pairs, {"topics": list(TOPICS), "prompts": len(prompts), "new_tokens": NEW_TOKENS,
                   "strength": STRENGTH, "threshold": THRESHOLD, "seed": SEED}


def uses_topic_word(prompt: str, completion: str, words) -> bool:
    """Whether the completion holds a bag word (whole word, any case) that the prompt does not."""
    def found(text):
        return {w for w in words if re.search(rf"\b{re.escape(w)}\b", text, flags=re.IGNORECASE)}
    return bool(found(completion) - found(prompt))


def generation_perplexity(scorer, enc, generations) -> float:
    """exp of the mean negative log-likelihood per generated token, given its prompt, under the
    scorer's (unmodified) model; nan when nothing was generated."""
    requests = [(enc.encode(g["prompt"], allowed_special="all"), g["ids"]) for g in generations if g["ids"]]
    if not requests:
        return math.nan
    scores = scorer.loglikelihoods(requests, desc="topic fluency")
    tokens = sum(len(c) for _, c in requests)
    return math.exp(-sum(logp for logp, _ in scores) / tokens)


def _row(scorer, enc, generations, pairs) -> dict:
    hits = [uses_topic_word(g["prompt"], g["completion"], TOPICS[topic]) for g, (topic, _) in
            zip(generations, pairs, strict=True)]
    per_topic = {t: sum(h for h, (topic, _) in zip(hits, pairs, strict=True) if topic == t) /
                 sum(topic == t for topic, _ in pairs) for t in dict.fromkeys(t for t, _ in pairs)}
    return {"accuracy": sum(hits) / len(hits), "per_topic": per_topic,
            "perplexity": generation_perplexity(scorer, enc, generations)}


def evaluate_topic(model, enc, scorer, pairs) -> dict:
    new_tokens = NEW_TOKENS
    seeds = range(SEED, SEED + len(pairs))  # sample i draws from its own seed: rows are reproducible alone
    plain = [sample(model, enc, prompt, new_tokens, seed=s) for (_, prompt), s in zip(pairs, seeds, strict=True)]
    result = {"plain": _row(scorer, enc, plain, pairs)}
    if model.config.is_backpack:
        tables = {topic: topic_control(model, enc, TOPICS[topic], STRENGTH, THRESHOLD)[0] for topic in TOPICS}
        steered = [sample(model, enc, prompt, new_tokens, seed=s, scale_table=tables[topic])
                   for (topic, prompt), s in zip(pairs, seeds, strict=True)]
        result["steered"] = _row(scorer, enc, steered, pairs)
    others = steered if model.config.is_backpack else plain
    result["samples"] = [{"topic": t, "prompt": p, "plain": g["completion"],
                          **({"steered": s["completion"]} if model.config.is_backpack else {})}
                         for (t, p), g, s in zip(pairs, plain, others, strict=True)]
    return result
