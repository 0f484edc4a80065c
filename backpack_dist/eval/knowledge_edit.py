"""`--tasks edit`: the paper's knowledge edit (section 6) scored over a small shipped list of facts.

Each fact (target, old, new) is edited with senses/edit.py (in every sense of the target, the
component along e_old is replaced by the same-strength component along e_new), then:

- success: the share of the fact's prompts where p(new) > p(old) for the next token after the
  edit (and before it, the baseline: how often the model already prefers `new`);
- collateral: on prompts that hold the target but ask something else, the mean KL divergence of
  the next-token distribution after the edit from the one before (0: nothing else moved);
- locality: the largest change of any next-token probability on the other facts' prompts, which
  do not hold the target. A Backpack's edit touches only the target's sense vectors, so this is 0
  exactly; a figure above 0 would mean the edit leaked.

A Transformer has no senses: it gets the baseline success only.
"""

from __future__ import annotations

import dataclasses

import torch

from ..senses.edit import knowledge_edit
from ..senses.intervention import next_token_logprobs
from ..senses.words import encode_text, word_tokens


@dataclasses.dataclass(frozen=True)
class Fact:
    target: str
    old: str
    new: str
    prompts: tuple[str, ...]
    """Prompts whose next word is the fact's object; each holds " target", as the edit reads it."""
    unrelated: tuple[str, ...]
    """Prompts that hold the target but whose next word is not the object."""


FACTS = (
    Fact("MacBook", "Apple", "HP", ("The MacBook is made by", "I bought a MacBook, a laptop designed by"),
         ("My MacBook has a screen that is", "I carried my MacBook to the")),
    Fact("iPhone", "Apple", "Samsung", ("The iPhone is a phone made by", "The new iPhone was announced by"),
         ("I dropped my iPhone on the", "The iPhone battery lasts for")),
    Fact("Windows", "Microsoft", "Google", ("The Windows operating system is made by",
                                            "The Windows software is sold by"),
         ("I opened the Windows settings and", "My Windows updates take a long")),
    Fact("PlayStation", "Sony", "Microsoft", ("The PlayStation is a console made by",
                                              "The PlayStation games are published by"),
         ("We played the PlayStation all", "The PlayStation controller is")),
    Fact("Paris", "France", "Italy", ("The city of Paris is the capital of", "The city of Paris is in"),
         ("We walked around Paris for", "The weather in Paris was")),
    Fact("Tokyo", "Japan", "China", ("The city of Tokyo is the capital of", "The city of Tokyo is in"),
         ("The trains in Tokyo are", "We spent a week in Tokyo and")),
    Fact("Berlin", "Germany", "Spain", ("The city of Berlin is the capital of", "The city of Berlin is in"),
         ("The museums in Berlin are", "We took a train to Berlin and")),
    Fact("Toyota", "Japan", "Germany", ("The Toyota car company is from", "The Toyota cars are built in"),
         ("My Toyota needs new", "The Toyota dealer said that")),
)


def load_edit(_flag, limit: int | None, loaded) -> tuple[list[Fact], dict]:
    """The shipped facts (the first --limit), each old and new word a single token of this tokenizer."""
    facts = list(FACTS[:limit] if limit else FACTS)
    for fact in facts:
        for word in (fact.old, fact.new):
            if len(word_tokens(loaded.enc, word)) != 1:
                raise ValueError(f"edit: this tokenizer splits {word!r} into several tokens; the edit needs "
                                 "single-token old and new words (use a GPT-2-tokenized checkpoint)")
    return facts, {"facts": len(facts), "prompts": sum(len(f.prompts) for f in facts)}


def _logprobs(model, enc, prompts) -> list[torch.Tensor]:
    return [next_token_logprobs(model, encode_text(enc, p, model.config.seq_len)) for p in prompts]


def _prefers_new(logprobs, old_id: int, new_id: int) -> list[bool]:
    return [bool(lp[new_id] > lp[old_id]) for lp in logprobs]


def _kl(before: torch.Tensor, after: torch.Tensor) -> float:
    """KL(after || before) of two log-probability vectors."""
    return float((after.exp() * (after - before)).sum())


def evaluate_edit(model, enc, facts) -> dict:
    rows = []
    for fact in facts:
        old_id, new_id = (word_tokens(enc, w)[0] for w in (fact.old, fact.new))
        before = _logprobs(model, enc, fact.prompts)
        row = {"fact": f"{fact.target}: {fact.old} -> {fact.new}",
               "success_before": _prefers_new(before, old_id, new_id)}
        if model.config.is_backpack:
            others = [p for f in facts if f is not fact for p in f.prompts]
            unrelated_before, others_before = _logprobs(model, enc, fact.unrelated), _logprobs(model, enc, others)
            with knowledge_edit(model, enc, fact.target, fact.old, fact.new):
                after = _logprobs(model, enc, fact.prompts)
                unrelated_after, others_after = _logprobs(model, enc, fact.unrelated), _logprobs(model, enc, others)
            row["success_after"] = _prefers_new(after, old_id, new_id)
            row["collateral_kl"] = sum(map(_kl, unrelated_before, unrelated_after)) / len(fact.unrelated)
            row["locality_max_change"] = max((float((a.exp() - b.exp()).abs().max())
                                              for a, b in zip(others_after, others_before, strict=True)), default=0.0)
        rows.append(row)

    def share(key):
        flags = [flag for row in rows for flag in row[key]]
        return sum(flags) / len(flags)

    result = {"success_before": share("success_before"), "facts": rows}
    if model.config.is_backpack:
        result.update(success_after=share("success_after"),
                      collateral_kl=sum(r["collateral_kl"] for r in rows) / len(rows),
                      locality_max_change=max(r["locality_max_change"] for r in rows))
    return result
