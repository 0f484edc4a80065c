"""The demo pipeline end to end at a smaller size, and its embedded corpus and vocabulary."""

import json
import subprocess
import sys

import pytest
from train_helpers import REPO, env

from backpack_dist.demo.claim import topic_words
from backpack_dist.demo.corpus import ambiguous_words, generate
from backpack_dist.demo.vocabulary import write_tiktoken_file
from backpack_dist.pretrained import load_pretrained
from backpack_dist.senses.intervention import SenseScale, predict
from backpack_dist.tokenizer import load_tokenizer


def test_corpus_is_deterministic_and_words_have_two_topics():
    assert generate(50, seed=3) == generate(50, seed=3)
    assert generate(50, seed=3) != generate(50, seed=4)
    assert all(len(topics) == 2 for topics in ambiguous_words().values())
    text = " ".join(generate(300))
    for word in ambiguous_words():
        assert f" {word} " in text


def test_vocabulary_encodes_words_as_single_tokens_and_round_trips(tmp_path):
    docs = generate(200)
    path = tmp_path / "demo.tiktoken"
    n_vocab = write_tiktoken_file(docs, path)
    enc = load_tokenizer(str(path))
    assert enc.n_vocab == n_vocab and enc.eot_token == n_vocab - 1
    for doc in docs[:50]:
        ids = enc.encode_ordinary(doc)
        assert enc.decode(ids) == doc
        assert len(ids) == len(doc.split())  # one token per word
    assert enc.decode(enc.encode_ordinary("unseen words: ünïcode!")) == "unseen words: ünïcode!"  # bytes fallback


@pytest.mark.slow
def test_demo_pipeline_small(tmp_path):
    out = tmp_path / "demo"
    args = [sys.executable, "-m", "backpack_dist.demo", "--out", str(out), "--docs", "300", "--steps", "6",
            "--d_model", "32", "--n_layer", "2", "--n_head", "2", "--n_senses", "4", "--seq_len", "64",
            "--global_batch", "8", "--micro_batch", "2"]
    result = subprocess.run(args, cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in range(1, 8):
        assert f"==> [{stage}/7]" in result.stdout
    assert "demo finished" in result.stdout
    assert "backpack     step 6: train loss" in result.stdout and "transformer  step 6" in result.stdout
    assert "sense  3 +" in result.stdout and "token ' bat'" in result.stdout  # the look-up table
    assert "before" in result.stdout and "after" in result.stdout  # the intervention table
    check_claim(out / "export" / "backpack", out / "results" / "intervention.json", result.stdout)
    for family in ("backpack", "transformer"):
        assert (out / "export" / family / "model.safetensors").is_file()
        assert (out / "results" / f"{family}.json").is_file()
        assert (out / "runs" / family / "checkpoints" / "step_00000006" / "COMPLETE").is_file()
    again = subprocess.run(args, cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout and again.stdout.count("(finished 6 steps)") == 2

    # Each checkpoint carries the demo's own tokenizer: the run still loads with the data gone.
    run = out / "runs" / "backpack"
    assert (run / "checkpoints" / "step_00000006" / "tokenizer.tiktoken").is_file()
    (out / "corpus" / "demo.tiktoken").unlink()
    model, tokenizer, info = load_pretrained(run)
    assert info["step"] == 6 and tokenizer.n_vocab < 50257 and tokenizer.n_vocab <= model.config.vocab_size
    assert tokenizer.decode(tokenizer.encode_ordinary(" bat")) == " bat"


def check_claim(export, figures, stdout):
    """The demo checked its claim on the command it showed, and reported the verdict its figures give."""
    claim = json.loads(figures.read_text())
    assert claim["prompt"] == "the tiny bat" and claim["cue"] == "tiny" and claim["scale"] == "tiny:*=0"
    assert (claim["source"], claim["target"]) == ("cave", "baseball")
    assert "--text 'the tiny bat' --scale 'tiny:*=0'" in stdout  # the figures are those of the command shown
    # The figures are the predictions of the model the demo exported, before and after zeroing the senses.
    model, tokenizer, _ = load_pretrained(export)
    shown = predict(model, tokenizer, claim["prompt"], [SenseScale("tiny", None, 0.0)], top=model.config.vocab_size)
    for when in ("before", "after"):
        probs = {p["token"]: p["prob"] for p in shown[when]}
        for topic in ("baseball", "cave"):
            assert claim[when][topic] == pytest.approx(sum(probs[" " + w] for w in topic_words(topic)), abs=1e-5)
    before, after = claim["before"], claim["after"]
    holds = after["baseball"] >= max(0.1, 2 * before["baseball"]) and after["cave"] < before["cave"]
    assert claim["holds"] == holds
    verdict = ("took away what says which ' bat' it is" if holds
               else "the intervention did NOT bring the other topic back")
    assert stdout.count(verdict) == 2  # after the intervention and in the summary
