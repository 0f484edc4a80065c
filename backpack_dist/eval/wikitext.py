r"""WikiText (the raw test set shared by WikiText-2 and WikiText-103): whole articles scored with
rolling disjoint windows (scoring.rolling_windows) after undoing WikiText's tokenisation.

Word-level perplexity = exp(total NLL / words of the raw article), the figure the paper
reports, words counted as lm-evaluation-harness does (len(re.split(r"\s+", page)): the
leading space of a raw article counts one empty word); token-level divides by GPT-2 tokens and byte-level by
the UTF-8 bytes of the raw article (bits_per_byte is the same figure in bits)."""

from __future__ import annotations

import math
import re

from .sources import check_file, hub_record, load_hub, local_record, read_text, take

HUB = ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test")
# An article starts at a top-level heading line " = Title = " (sections use " = = Title = = ").
ARTICLE_HEADING = re.compile(r"^ = [^=].* = $")

# WikiText splits text into space-separated tokens and escapes in-number punctuation; these
# rules join them back so the model sees ordinary text. Applied in order.
_DETOKENIZE = [
    (re.compile(r" @(.)@ "), r"\1"),  # 1 @,@ 000 -> 1,000 ; 3 @.@ 5 -> 3.5 ; well @-@ known
    (re.compile(r"s ' "), "s' "),  # plural possessive
    (re.compile(r" ([.,;:!?]) "), r"\1 "),
    (re.compile(r" 's\b"), "'s"),
    (re.compile(r"\( *([^)]*?) *\)"), r"(\1)"),
    (re.compile(r"\[ *([^\]]*?) *\]"), r"[\1]"),
    (re.compile(r"\{ *([^}]*?) *\}"), r"{\1}"),
    (re.compile(r"\" *([^\"]*?) *\""), r'"\1"'),
    (re.compile(r"' *([^']*?) *'"), r"'\1'"),
    (re.compile(r"= = = ="), "===="),
    (re.compile(r"= = ="), "==="),
    (re.compile(r"= ="), "=="),
    (re.compile(" \u00b0 "), "\u00b0"),
    (re.compile(r" \n"), "\n"),
    (re.compile(r"\n "), "\n"),
    (re.compile(r" N "), " 1 "),
]


def detokenize(text: str) -> str:
    for pattern, replacement in _DETOKENIZE:
        text = pattern.sub(replacement, text)
    return text


def split_articles(raw: str) -> list[str]:
    """The raw test file as a list of articles, each from its heading line to the next one."""
    articles: list[list[str]] = []
    for line in raw.splitlines(keepends=True):
        if ARTICLE_HEADING.match(line.rstrip("\n")) or not articles:
            articles.append([])
        articles[-1].append(line)
    return [text for text in ("".join(lines) for lines in articles) if text.strip()]


def read_raw(path) -> list[str]:
    path = check_file(path, "WikiText file", "pass wiki.test.raw from wikitext-103-raw-v1 or wikitext-2-raw-v1")
    raw = read_text(path)
    if "<unk>" in raw:
        raise ValueError(f"{path} is the tokenized WikiText (it contains <unk>); pass the raw file wiki.test.raw")
    if not any(ARTICLE_HEADING.match(line) for line in raw.splitlines()):
        raise ValueError(f"{path} is not WikiText raw text: it has no ' = Title = ' article heading lines")
    return split_articles(raw)


def load_wikitext(path=None, limit=None) -> tuple[list[str], dict]:
    if path is not None:
        articles = take(read_raw(path), limit)
        return articles, local_record([path], articles)
    articles = take(load_hub(*HUB, local_flag="--wikitext_path wiki.test.raw")["page"], limit)
    return articles, hub_record(*HUB, articles)


def evaluate_wikitext(scorer, enc, articles) -> dict:
    token_lists = [enc.encode_ordinary(detokenize(article)) for article in articles]
    nll = -sum(scorer.rolling_loglikelihoods(token_lists, desc="wikitext"))
    words = sum(len(re.split(r"\s+", article)) for article in articles)
    n_bytes = sum(len(article.encode("utf-8")) for article in articles)
    tokens = sum(len(t) for t in token_lists)
    return {"word_ppl": math.exp(nll / words), "token_ppl": math.exp(nll / tokens),
            "byte_ppl": math.exp(nll / n_bytes), "bits_per_byte": nll / n_bytes / math.log(2),
            "examples": len(articles), "words": words, "tokens": tokens, "bytes": n_bytes}
