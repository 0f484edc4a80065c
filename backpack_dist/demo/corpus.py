"""The demo's embedded corpus: generated, not copied, so it needs no network and no third-party
text. Some words carry two unrelated senses (a river bank and a money bank, a baseball bat and
a cave bat, ...) so a trained Backpack has something to separate in its sense look-up."""

from __future__ import annotations

import random

# Each topic: nouns, verbs (past tense), people, adjectives, its ambiguous word and templates.
# {w} is the ambiguous word, {n}/{v}/{p}/{a} draw from the topic's lists.
TOPICS = {
    "finance": dict(
        w="bank", n=["money", "loan", "account", "interest", "deposit", "cash", "credit", "savings", "mortgage"],
        v=["borrowed", "deposited", "saved", "lent", "paid", "withdrew", "invested"],
        p=["the banker", "the clerk", "my uncle", "the investor", "a customer", "the manager"],
        a=["high", "low", "safe", "late", "large"],
        t=["{p} {v} the {n} at the {w} .", "the {w} raised the {n} on my {n} .", "the {w} said the {n} was {a} .",
           "{p} opened an {n} at the {w} and {v} some {n} .", "at the {w} , {p} asked about the {n} ."]),
    "river": dict(
        w="bank", n=["water", "fish", "mud", "reeds", "boat", "shore", "stream", "current", "willows"],
        v=["fished", "walked", "swam", "rested", "sat", "waded", "rowed"],
        p=["the fisherman", "the children", "a heron", "my uncle", "the ferryman", "an otter"],
        a=["muddy", "green", "steep", "cold", "quiet"],
        t=["{p} {v} on the {w} of the river .", "the {n} by the river {w} was {a} .",
           "we {v} along the {w} where the {n} meets the {n} .", "{p} {v} near the {a} {w} .",
           "the river flooded the {w} and the {n} ."]),
    "baseball": dict(
        w="bat", n=["ball", "pitch", "inning", "glove", "team", "base", "stadium", "catcher", "fans"],
        v=["swung", "hit", "cracked", "dropped", "gripped", "raised"],
        p=["the batter", "the rookie", "the captain", "the coach", "our shortstop"],
        a=["wooden", "heavy", "lucky", "new", "broken"],
        t=["{p} {v} the {a} {w} at the {n} .", "the {w} {v} the {n} into the {n} .",
           "{p} picked up the {w} in the last {n} .", "with one swing of the {w} , {p} {v} the {n} ."]),
    "cave": dict(
        w="bat", n=["cave", "wings", "night", "insects", "colony", "roost", "moths", "darkness", "echoes"],
        v=["flew", "hunted", "slept", "hung", "squeaked", "fluttered"],
        p=["the biologist", "a hungry owl", "the explorer", "the children", "a guide"],
        a=["tiny", "furry", "brown", "sleepy", "silent"],
        t=["the {a} {w} {v} out of the {n} at {n} .", "a {w} {v} in the {n} with its {n} .",
           "{p} watched the {w} that {v} among the {n} .", "the {w} {v} through the {n} to catch {n} ."]),
    "music": dict(
        w="pitch", n=["song", "note", "choir", "melody", "tune", "singer", "piano", "chord", "voice"],
        v=["sang", "played", "tuned", "hummed", "practiced", "held"],
        p=["the soprano", "the teacher", "the violinist", "our choir", "the tenor"],
        a=["perfect", "high", "low", "sharp", "flat"],
        t=["{p} {v} the {n} at a {a} {w} .", "the {w} of the {n} was {a} .",
           "{p} {v} until every {n} had the right {w} .", "a {a} {w} made the {n} ring ."]),
    "seasons": dict(
        w="spring", n=["flowers", "rain", "blossoms", "april", "garden", "tulips", "birds", "meadow", "sunshine"],
        v=["bloomed", "arrived", "returned", "began", "warmed", "brought"],
        p=["the gardener", "my grandmother", "the farmer", "the children", "the robins"],
        a=["warm", "early", "wet", "bright", "gentle"],
        t=["in the {w} the {n} {v} in the {n} .", "{p} planted {n} every {w} .",
           "the {a} {w} {v} {n} and {n} .", "when {w} {v} , {p} opened the windows ."]),
    "machines": dict(
        w="spring", n=["coil", "metal", "valve", "gear", "bolt", "machine", "lever", "clock", "piston"],
        v=["snapped", "compressed", "stretched", "rusted", "bent", "broke"],
        p=["the mechanic", "the engineer", "the watchmaker", "my father", "the robot"],
        a=["steel", "tight", "loose", "rusty", "strong"],
        t=["the {a} {w} in the {n} {v} .", "{p} replaced the {w} behind the {n} .",
           "the {w} {v} and the {n} stopped .", "{p} wound the {w} of the old {n} ."]),
}


def sentence(topic: dict, rng: random.Random) -> str:
    template = rng.choice(topic["t"])
    out = template.replace("{w}", topic["w"])
    for key in ("n", "v", "p", "a"):
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", rng.choice(topic[key]), 1)
    return out


def generate(num_documents: int, seed: int = 0) -> list[str]:
    """Documents of 4-8 sentences, each about one topic."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    docs = []
    for _ in range(num_documents):
        topic = TOPICS[rng.choice(names)]
        docs.append(" ".join(sentence(topic, rng) for _ in range(rng.randint(4, 8))))
    return docs


def ambiguous_words() -> dict[str, list[str]]:
    """word -> the topics it belongs to, for the words used in more than one topic."""
    out: dict[str, list[str]] = {}
    for name, topic in sorted(TOPICS.items()):
        for word in {topic["w"], *topic["n"]}:
            out.setdefault(word, []).append(name)
    return {w: topics for w, topics in out.items() if len(topics) > 1}
