"""The demo's claim, measured on the trained Backpack: one sense of ' bat' carries one of its two
topics, so zeroing that sense on a prompt without context ("the bat") moves the next word's
probability from that topic's words to the other topic's.

Which sense carries a topic differs from run to run (a library version or a thread count changes
the last bits of every sum, and training amplifies them), so the sense is chosen by the same
measurement the claim is checked with. Whether any sense does differs too: a Backpack can read the
topic from the context words' senses instead, and then zeroing one sense of ' bat' moves little.
So the check is reported either way."""

from __future__ import annotations

import dataclasses

from .corpus import TOPICS, ambiguous_words

WORD = "bat"
PROMPT = "the bat"  # no context: the next word (a verb) may come from either topic


def topic_words(name: str) -> list[str]:
    """A topic's nouns and verbs that no other topic uses."""
    shared = ambiguous_words()
    return [w for w in TOPICS[name]["n"] + TOPICS[name]["v"] if w not in shared]


@dataclasses.dataclass
class Claim:
    word: str
    prompt: str
    sense: int  # the sense zeroed
    source: str  # the topic it carries: its words lose probability when the sense is zeroed
    target: str  # the word's other topic
    before: dict[str, float]  # topic -> probability that the next word is one of topic_words(topic)
    after: dict[str, float]

    @property
    def holds(self) -> bool:
        """The source topic's words lose at least half of their probability and the target's gain."""
        return (self.after[self.source] <= self.before[self.source] / 2
                and self.after[self.target] > self.before[self.target])

    def moved(self, topic: str) -> str:
        return f"{topic} words {self.before[topic]:.0%} -> {self.after[topic]:.0%}"

    def verdict(self) -> str:
        change = f"{self.moved(self.source)}, {self.moved(self.target)}"
        if self.holds:
            return (f"zeroing sense {self.sense} of ' {self.word}' moved probability from {self.source} words to "
                    f"{self.target} words ({change}): the sense separates the two topics")
        return (f"the intervention did NOT separate the topics: zeroing sense {self.sense} of ' {self.word}', the one "
                f"that moves the most, gave {change} (the claim needs {self.source} words to lose at least half "
                f"and {self.target} words to gain). Whether a sense of ' {self.word}' takes one topic varies from run "
                f"to run; another --seed (with a new --out) may give it one")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "holds": self.holds}


def measure(export_dir, word: str = WORD, prompt: str = PROMPT) -> Claim:
    """Zero each sense of `word` in turn on `prompt` (exactly what `senses predict --scale` does)
    and keep the sense, and the direction, that moves the most probability between the word's two
    topics: the smaller of what one topic's words lose and what the other's gain."""
    from ..pretrained import load_pretrained
    from ..senses.intervention import SenseScale, next_token_probs, sense_scales_for
    from ..senses.words import encode_text

    model, enc, _ = load_pretrained(export_dir)
    ids = encode_text(enc, prompt, model.config.seq_len)
    topics = [name for name, t in TOPICS.items() if t["w"] == word]
    words = {name: [enc.encode_single_token(" " + w) for w in topic_words(name)] for name in topics}

    def mass(probs) -> dict[str, float]:
        return {name: float(probs[w].sum()) for name, w in words.items()}

    before = mass(next_token_probs(model, ids))
    best = None
    for sense in range(model.config.n_senses):
        after = mass(next_token_probs(model, ids, sense_scales_for(model, enc, ids, [SenseScale(word, sense, 0.0)])))
        for source, target in (topics, topics[::-1]):
            moved = min(before[source] - after[source], after[target] - before[target])
            if best is None or moved > best[0]:
                best = (moved, Claim(word, prompt, sense, source, target, before, after))
    return best[1]
