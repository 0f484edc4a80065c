"""The control experiments as eval tasks (debias, topic, edit) on tiny GPT-2-vocabulary models:
each figure recomputed directly from the model's probabilities, and the runner's results JSON
and table."""

import json
import math
import re

import pytest
import torch
from sense_checkpoints import make_checkpoint

from backpack_dist.eval import runner, topic
from backpack_dist.eval.debias import evaluate_debias, gender_sense_scores
from backpack_dist.eval.knowledge_edit import FACTS, evaluate_edit
from backpack_dist.eval.results import render
from backpack_dist.eval.scoring import Scorer
from backpack_dist.eval.topic import TOPICS, evaluate_topic, uses_topic_word
from backpack_dist.pretrained import load_pretrained


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("control")
    return {f: make_checkpoint(root / f, family=f) for f in ("backpack", "transformer")}


@pytest.fixture(scope="module")
def backpack(dirs):
    model, enc, _ = load_pretrained(dirs["backpack"])
    return model, enc


def next_probs(model, enc, text, scales=None):
    x = torch.tensor([enc.encode(text)])
    with torch.no_grad():
        logits = model(x, **({} if scales is None else {"sense_scales": scales}))[0, -1].double()
    return logits.softmax(-1)


def test_debias_zeroes_the_sense_its_rule_picks_and_the_ratio_is_the_direct_one(backpack):
    model, enc = backpack
    professions = ["nurse", "doctor"]
    result = evaluate_debias(model, enc, professions)
    he, she = enc.encode(" he")[0], enc.encode(" she")[0]
    # The rule, by hand: |C(p)_l . (e_he - e_she)| averaged over the professions' tokens.
    E = model.wte.weight[:model.config.vocab_size].detach().double()
    with torch.no_grad():
        C = model.sense_network(model.wte(torch.tensor([enc.encode(" nurse")[0], enc.encode(" doctor")[0]]))).double()
    scores = (C @ (E[he] - E[she])).abs().mean(0)
    assert result["sense"] == int(scores.argmax())
    assert torch.allclose(gender_sense_scores(model, enc, professions).double(), scores, rtol=1e-4)
    ratios_before, ratios_after = [], []
    from backpack_dist.senses.bias import TEMPLATES
    for p in professions:
        for template in TEMPLATES:
            text = template.format(p)
            ids = enc.encode(text)
            scales = torch.ones(1, len(ids), model.config.n_senses)
            for j, t in enumerate(ids):
                if t == enc.encode(f" {p}")[0]:
                    scales[0, j, result["sense"]] = 0
            for probs, out in ((next_probs(model, enc, text), ratios_before),
                               (next_probs(model, enc, text, scales), ratios_after)):
                out.append(max(probs[he] / probs[she], probs[she] / probs[he]).item())
    # Mean over templates, then professions (equal template counts: the plain mean).
    assert result["bias_before"] == pytest.approx(sum(ratios_before) / len(ratios_before), rel=1e-6)
    assert result["bias_after"] == pytest.approx(sum(ratios_after) / len(ratios_after), rel=1e-6)
    assert result["bias_after"] != pytest.approx(result["bias_before"])  # the zeroed sense mattered


def test_topic_word_rule_counts_whole_words_the_prompt_lacks():
    words = TOPICS["science"]
    assert uses_topic_word("The", " of Physics and more", words)
    assert not uses_topic_word("The", " metaphysics", words)  # not a whole word
    assert not uses_topic_word("The science", " of science", words)  # already in the prompt
    assert uses_topic_word("The science", " of energy", words)


@pytest.fixture
def short_generations(monkeypatch):
    monkeypatch.setattr(topic, "NEW_TOKENS", 6)  # a tiny model's tokens cost as much as a real one's logits


def test_topic_accuracy_and_fluency_are_recomputed_from_the_samples(backpack, short_generations):
    model, enc = backpack
    scorer = Scorer(model, enc.eot_token, batch_size=4)
    pairs = [("science", "The"), ("sports", "The")]
    result = evaluate_topic(model, enc, scorer, pairs)
    from backpack_dist.senses.generate import sample, topic_control
    for row in ("plain", "steered"):
        texts = [s[row] for s in result["samples"]]
        hits = [uses_topic_word(p, t, TOPICS[name]) for (name, p), t in zip(pairs, texts, strict=True)]
        assert result[row]["accuracy"] == sum(hits) / len(hits)
        # Fluency: the generated tokens' perplexity under the model, one forward pass per sample
        # drawn again here with the task's seeds (seed i for pair i).
        nll, count = 0.0, 0
        for i, (name, prompt) in enumerate(pairs):
            table = topic_control(model, enc, TOPICS[name])[0] if row == "steered" else None
            drawn = sample(model, enc, prompt, topic.NEW_TOKENS, seed=i, scale_table=table)
            assert drawn["completion"] == texts[i]
            p_ids, g_ids = enc.encode(prompt), drawn["ids"]
            with torch.no_grad():
                logp = model(torch.tensor([p_ids + g_ids]))[0].double().log_softmax(-1)
            nll -= sum(logp[len(p_ids) - 1 + j, t].item() for j, t in enumerate(g_ids))
            count += len(g_ids)
        assert result[row]["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert evaluate_topic(model, enc, scorer, pairs)["samples"] == result["samples"]  # seeded


def test_edit_success_is_p_new_over_p_old_and_other_prompts_do_not_move(backpack):
    model, enc = backpack
    facts = FACTS[:2]
    result = evaluate_edit(model, enc, facts)
    from backpack_dist.senses.edit import knowledge_edit
    fact = facts[0]
    old, new = enc.encode(f" {fact.old}")[0], enc.encode(f" {fact.new}")[0]
    with knowledge_edit(model, enc, fact.target, fact.old, fact.new):
        after = [next_probs(model, enc, p) for p in fact.prompts]
    assert result["facts"][0]["success_after"] == [bool(p[new] > p[old]) for p in after]
    before = [next_probs(model, enc, p) for p in fact.prompts]
    assert result["facts"][0]["success_before"] == [bool(p[new] > p[old]) for p in before]
    # The edit pushed new over old on every prompt.
    assert all(a[new] / a[old] > b[new] / b[old] for a, b in zip(after, before, strict=True))
    assert result["locality_max_change"] == 0.0  # the edit touches only the target's senses
    assert result["collateral_kl"] > 0  # but it does change predictions after the target


def test_shipped_facts_hold_their_target_as_the_edit_reads_it():
    for fact in FACTS:
        for prompt in fact.prompts + fact.unrelated:
            assert f" {fact.target}" in prompt, (fact.target, prompt)


def test_control_tasks_through_the_runner_and_the_table(dirs, tmp_path, short_generations):
    reports = []
    for family, path in dirs.items():
        out = tmp_path / f"{family}.json"
        report = runner.evaluate(str(path), tasks="control", out=str(out), limit=1, device="cpu")
        assert list(report["results"]) == ["debias", "topic", "edit"]
        reports.append(out)
        saved = json.loads(out.read_text())
        if family == "transformer":  # the baseline rows only
            assert "bias_after" not in saved["results"]["debias"] and "steered" not in saved["results"]["topic"]
            assert "success_after" not in saved["results"]["edit"]
        else:
            assert saved["results"]["debias"]["sense_rule"].startswith("argmax")
    table = render(reports)
    assert "Control experiments" in table
    rows = [line for line in table.splitlines() if line.startswith("| backpack-micro") or
            line.startswith("| transformer-micro")]
    assert len(rows) == 2 and re.search(r"\(sense \d+\)", rows[0])
