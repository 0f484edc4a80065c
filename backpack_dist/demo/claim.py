"""The demo's claim, measured on the trained Backpack: in "the tiny bat" the next word is a cave
bat's verb, and the word that says which bat it is, ' tiny', says it through its senses. Zero
every sense of ' tiny' (`senses predict --scale "tiny:*=0"`) and the Backpack no longer knows
which bat: baseball words come back.

A Backpack's output is a weighted sum of each context word's sense vectors, so zeroing one word's
senses removes exactly that word's term and leaves the weights, and every other term, as they were.
That ' tiny' carries the topic is learned, and it held in all 14 trainings of the demo's corpus
tried (seeds, thread counts, batch sizes, steps, learning rates, weight decay, sense counts):
baseball words went from 0-8% to 15-49%, cave words from 84-100% to 30-77%. Zeroing one sense of
' bat' on "the bat" (the demo's earlier claim) separated the topics in only 3 of those 14: which
sense of ' bat' takes a topic, if any, varies with the last bits of training."""

from __future__ import annotations

import dataclasses

from .corpus import TOPICS, ambiguous_words

WORD = "bat"
CUE = "tiny"  # only the cave topic's sentences describe a bat as tiny
PROMPT = f"the {CUE} {WORD}"  # the corpus continues "the <adjective> bat" with a verb of that topic
SOURCE, TARGET = "cave", "baseball"
SCALE = f"{CUE}:*=0"  # every sense of the cue word, as `senses predict --scale` reads it
AT_LEAST = 0.10  # the target topic's words after the intervention...
FACTOR = 2  # ...and at least this many times what they had before


def topic_words(name: str) -> list[str]:
    """A topic's nouns and verbs that no other topic uses."""
    shared = ambiguous_words()
    return [w for w in TOPICS[name]["n"] + TOPICS[name]["v"] if w not in shared]


@dataclasses.dataclass
class Claim:
    prompt: str
    cue: str  # the word whose senses are zeroed
    word: str  # the ambiguous word it disambiguates
    source: str  # the topic the cue selects
    target: str  # the word's other topic
    before: dict[str, float]  # topic -> probability that the next word is one of topic_words(topic)
    after: dict[str, float]

    @property
    def holds(self) -> bool:
        """The prompt reads as the source topic, and zeroing the cue's senses brings the target back."""
        return (self.after[self.target] >= max(AT_LEAST, FACTOR * self.before[self.target])
                and self.after[self.source] < self.before[self.source])

    def moved(self, topic: str) -> str:
        return f"{topic} words {self.before[topic]:.0%} -> {self.after[topic]:.0%}"

    def verdict(self) -> str:
        change = f"{self.moved(self.target)}, {self.moved(self.source)}"
        if self.holds:
            return (f"zeroing the senses of ' {self.cue}' in \"{self.prompt}\" took away what says which "
                    f"' {self.word}' it is: {change}")
        return (f"the intervention did NOT bring the other topic back: zeroing the senses of ' {self.cue}' in "
                f"\"{self.prompt}\" gave {change} (the claim needs {self.target} words to reach at least "
                f"{AT_LEAST:.0%} and {FACTOR}x what they had, and {self.source} words to lose). A model trained "
                f"for few steps may not have learned the corpus yet")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "scale": SCALE, "holds": self.holds}


def measure(export_dir) -> Claim:
    """The topics' probabilities after PROMPT, before and after zeroing every sense of CUE: exactly
    what `senses predict --text PROMPT --scale SCALE` computes."""
    from ..pretrained import load_pretrained
    from ..senses.intervention import next_token_probs, parse_scales, sense_scales_for
    from ..senses.words import encode_text

    model, enc, _ = load_pretrained(export_dir)
    ids = encode_text(enc, PROMPT, model.config.seq_len)
    words = {name: [enc.encode_single_token(" " + w) for w in topic_words(name)] for name in (SOURCE, TARGET)}

    def mass(probs) -> dict[str, float]:
        return {name: float(probs[w].sum()) for name, w in words.items()}

    scales = sense_scales_for(model, enc, ids, parse_scales(SCALE))
    return Claim(PROMPT, CUE, WORD, SOURCE, TARGET, mass(next_token_probs(model, ids)),
                 mass(next_token_probs(model, ids, scales)))
