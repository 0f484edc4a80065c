"""LAMBADA (OpenAI's detokenised test set, 5153 passages): predict the last word of a passage.

context = the passage up to its last space, target = " " + last word, as lm-evaluation-harness
splits it (7 OpenAI passages have a newline inside that "word", e.g. 'of\n\nPower'; see
docs/eval.md). Accuracy: every target token is the greedy argmax. Perplexity: exp(-mean over
passages of the target's total log-likelihood)."""

from __future__ import annotations

import math

from .sources import check_file, hub_record, load_hub, local_record, read_jsonl_objects, take

HUB = ("EleutherAI/lambada_openai", "default", "test")


def read_jsonl_texts(path) -> list[str]:
    path = check_file(path, "LAMBADA file", "pass the OpenAI lambada_test.jsonl")
    rows = read_jsonl_objects(
        path, lambda row: isinstance(row.get("text"), str) and " " in row["text"].strip(),
        "is not LAMBADA jsonl: each line must be a JSON object whose 'text' is a passage of several words "
        "(OpenAI's lambada_test.jsonl format)")
    for n, row in rows:
        # split_passage splits at the last space as lm-evaluation-harness does: a passage ending in
        # whitespace would make that whitespace, not the last word, the target
        if row["text"] != row["text"].rstrip():
            raise ValueError(f"{path} line {n}: the passage ends with whitespace (...{row['text'][-30:]!r}), which "
                             "would become the target instead of the last word; remove the trailing whitespace")
    texts = [row["text"] for _, row in rows]
    if not texts:
        raise ValueError(f"{path} holds no passages (expected OpenAI's lambada_test.jsonl)")
    return texts


def load_lambada(path=None, limit=None) -> tuple[list[str], dict]:
    if path is not None:
        texts = take(read_jsonl_texts(path), limit)
        return texts, local_record([path], texts)
    texts = take(load_hub(*HUB, local_flag="--lambada_path lambada_test.jsonl")["text"], limit)
    return texts, hub_record(*HUB, texts)


def split_passage(text: str) -> tuple[str, str]:
    """(context, target): the target is the last space-separated word with its leading space."""
    context, word = text.rsplit(" ", 1)
    return context, " " + word


def lambada_requests(texts, enc):
    requests = []
    for text in texts:
        context, target = split_passage(text)
        requests.append((enc.encode_ordinary(context), enc.encode_ordinary(target)))
    return requests


def evaluate_lambada(scorer, enc, texts) -> dict:
    scores = scorer.loglikelihoods(lambada_requests(texts, enc), desc="lambada")
    mean_ll = sum(ll for ll, _ in scores) / len(scores)
    return {"ppl": math.exp(-mean_ll), "acc": sum(greedy for _, greedy in scores) / len(scores),
            "examples": len(scores)}
