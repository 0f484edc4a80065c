"""Sense tools on a tiny random Backpack with GPT-2's vocabulary: exact interventions, look-up,
knowledge edit, topic control, bias ratio, and the CLI's output and errors."""

import json
import math
import subprocess
import sys

import pytest
import torch
from sense_checkpoints import make_checkpoint

from backpack_dist.pretrained import load_pretrained
from backpack_dist.senses import SenseToolError, knowledge_edit, lookup_word, parse_scales, sense_scales_for
from backpack_dist.senses.__main__ import main
from backpack_dist.senses.bias import bias_ratio, bias_report
from backpack_dist.senses.generate import sample, topic_control
from backpack_dist.senses.intervention import SenseScale, predict
from backpack_dist.senses.words import word_positions, word_tokens

NURSE = "When the nurse came into the room, the nurse"


@pytest.fixture(scope="module")
def backpack_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("senses") / "backpack")


@pytest.fixture(scope="module")
def transformer_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("senses") / "transformer", family="transformer")


@pytest.fixture(scope="module")
def loaded(backpack_dir):
    model, tokenizer, _ = load_pretrained(backpack_dir)
    return model, tokenizer


def contribution(model, ids, positions, sense):
    """Logit contribution of sense `sense` at `positions` to every prediction, computed directly
    from alpha and C: sum_j alpha[l, i, j] E C(x_j)_l (float64)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        alpha = model.sense_weights(x)[0, sense].double()  # (T, T)
        C = model.sense_vectors(x)[0, :, sense].double()  # (T, d)
        E = model.output_embedding().double()
    o = alpha[:, positions] @ C[positions]  # (T, d)
    return o @ E.T


@pytest.mark.parametrize("factor", [0.0, 3.0])
def test_scaling_a_sense_changes_logits_by_exactly_its_contribution(loaded, factor):
    model, tokenizer = loaded
    ids = tokenizer.encode(NURSE)
    positions = word_positions(tokenizer, ids, "nurse")
    assert len(positions) == 2 and all(tokenizer.decode([ids[j]]) == " nurse" for j in positions)
    sense = 1
    scales = sense_scales_for(model, tokenizer, ids, [SenseScale("nurse", sense, factor)])
    assert scales.shape == (1, len(ids), model.config.n_senses)
    assert (scales != 1).sum() == 2
    with torch.no_grad():
        before = model(torch.tensor([ids])).double()[0]
        after = model(torch.tensor([ids]), sense_scales=scales).double()[0]
    expected = (factor - 1) * contribution(model, ids, positions, sense)
    assert expected.abs().max() > 0.1  # the sense matters, so the check below has teeth
    torch.testing.assert_close(after - before, expected, atol=2e-4, rtol=1e-4)


def test_word_positions_cover_spacing_variants_and_multi_token_words(loaded):
    _, tokenizer = loaded
    ids = tokenizer.encode("nurse and the hairdresser met a nurse")
    start = len(tokenizer.encode("nurse"))  # "nurse" with no space before it is "n" + "urse"
    assert start == 2 and word_positions(tokenizer, ids, "nurse") == [*range(start), len(ids) - 1]
    hair = word_positions(tokenizer, ids, " hairdresser")
    assert len(hair) == len(tokenizer.encode(" hairdresser")) == 4
    with pytest.raises(SenseToolError, match="does not occur"):
        word_positions(tokenizer, ids, "Nurse")


def test_a_special_token_is_that_token_alone(loaded):
    """"<|endoftext|>" used to be read as " <|endoftext|>": the space token 220, then end-of-text."""
    _, tokenizer = loaded
    assert word_tokens(tokenizer, "<|endoftext|>") == [tokenizer.eot_token]
    ids = tokenizer.encode("the end <|endoftext|> next", allowed_special="all")
    assert word_positions(tokenizer, ids, "<|endoftext|>") == [ids.index(tokenizer.eot_token)]


@pytest.mark.parametrize("spec, message", [
    ("nurse", "bad scale"), ("nurse:1", "bad scale"), (":1=0", "bad scale"), ("nurse:x=0", "bad sense index"),
    ("nurse:1=big", "bad factor"), ("nurse:1=nan", "finite"),
])
def test_bad_scale_specs_are_named(spec, message):
    with pytest.raises(SenseToolError, match=message):
        parse_scales(spec)


def test_scale_specs_parse():
    expected = [SenseScale("nurse", 10, 0.0), SenseScale("New York", None, 2.5)]
    assert parse_scales("nurse:10=0,New York:*=2.5") == expected
    assert parse_scales(["he:0=1"]) == [SenseScale("he", 0, 1.0)]


def test_sense_index_out_of_range(loaded):
    model, tokenizer = loaded
    with pytest.raises(SenseToolError, match="out of range"):
        predict(model, tokenizer, NURSE, [SenseScale("nurse", 4, 0.0)])


def test_lookup_scores_are_the_vocabulary_projection_of_each_sense(loaded):
    model, tokenizer = loaded
    (entry,) = lookup_word(model, tokenizer, "science", top=5)
    assert entry["token"] == " science" and len(entry["senses"]) == model.config.n_senses
    with torch.no_grad():
        C = model.sense_vectors(torch.tensor([[entry["id"]]]))[0, 0]  # (k, d), via the model's own path
        scores = C @ model.output_embedding().T
    for s in entry["senses"]:
        row = scores[s["sense"]]
        assert [i["id"] for i in s["top"]] == row.topk(5).indices.tolist()
        assert [i["id"] for i in s["bottom"]] == row.topk(5, largest=False).indices.tolist()
        for item in s["top"] + s["bottom"]:
            assert item["score"] == pytest.approx(float(row[item["id"]]), abs=1e-4)


def test_relative_lookup_ranks_by_difference_from_the_mean_sense(loaded):
    model, tokenizer = loaded
    (entry,) = lookup_word(model, tokenizer, "science", top=5, relative=True)
    with torch.no_grad():
        C = model.sense_vectors(torch.tensor([[entry["id"]]]))[0, 0]
        scores = C @ model.output_embedding().T
        relative = scores - scores.mean(0)
    for s in entry["senses"]:
        assert [i["id"] for i in s["top"]] == relative[s["sense"]].topk(5).indices.tolist()
        assert s["top"][0]["score"] == pytest.approx(float(relative[s["sense"]].max()), abs=1e-4)


def test_knowledge_edit_moves_the_old_direction_onto_the_new_one_and_is_undone(loaded):
    model, tokenizer = loaded
    ids = tokenizer.encode("The MacBook is made by Apple")
    x = torch.tensor([ids])
    E = model.output_embedding().detach().double()
    with torch.no_grad():
        original, logits = model.sense_vectors(x).double(), model(x)
    with knowledge_edit(model, tokenizer, "MacBook", "Apple", "HP") as info:
        with torch.no_grad():
            edited, edited_logits = model.sense_vectors(x).double(), model(x)
    j = ids.index(info["target_ids"][0])
    e_old, e_new = E[info["old_id"]], E[info["new_id"]]
    c = original[0, j] @ e_old / e_old.dot(e_old)
    expected = original[0, j] - c[:, None] * e_old + (c * e_old.dot(e_old) / e_new.dot(e_new))[:, None] * e_new
    torch.testing.assert_close(edited[0, j], expected, atol=1e-4, rtol=1e-4)
    # HP's score under each sense gains what Apple's direction gave Apple (C_l . e_old), less the overlap removed
    gain = (edited[0, j] - original[0, j]) @ e_new
    torch.testing.assert_close(gain, original[0, j] @ e_old - c * e_old.dot(e_new), atol=1e-4, rtol=1e-4)
    assert gain.abs().max() > 1e-2
    others = [i for i in range(len(ids)) if i != j]
    torch.testing.assert_close(edited[0, others], original[0, others])
    assert not torch.allclose(edited_logits, logits)
    with torch.no_grad():  # the hook is gone: the model is exactly as before
        torch.testing.assert_close(model(x), logits, atol=0, rtol=0)
    with pytest.raises(SenseToolError, match="single-token"):
        with knowledge_edit(model, tokenizer, "MacBook", "hairdresser", "HP"):
            pass


def test_topic_control_raises_the_topic_words_logits(loaded):
    model, tokenizer = loaded
    table, summary = topic_control(model, tokenizer, "science,physics", strength=3.0)
    assert table.shape == (model.config.vocab_size, model.config.n_senses)
    assert set(table.unique().tolist()) == {1.0, 3.0} and summary["senses_upweighted"] > 0
    ids = tokenizer.encode("The game was played by physics students and science teachers")
    x = torch.tensor([ids])
    assert (table[x] != 1).any()  # some topic senses are in context
    with torch.no_grad():
        plain, steered = model(x)[0, -1], model(x, sense_scales=table[x])[0, -1]
    topic = summary["topic_ids"]
    assert steered[topic].mean() > plain[topic].mean()
    a = sample(model, tokenizer, "The game", max_new_tokens=5, temperature=0, scale_table=table)
    b = sample(model, tokenizer, "The game", max_new_tokens=5, temperature=0, scale_table=table)
    assert a == b and 1 <= len(a["ids"]) <= 5


def test_bias_ratio_matches_direct_computation(loaded):
    model, tokenizer = loaded
    report = bias_report(model, tokenizer, ["nurse"], templates=("When the {} came into the room,",), sense=2)
    ids = tokenizer.encode("When the nurse came into the room,")
    scales = torch.ones(1, len(ids), model.config.n_senses)
    scales[0, ids.index(tokenizer.encode(" nurse")[0]), 2] = 0
    he, she = tokenizer.encode(" he")[0], tokenizer.encode(" she")[0]
    with torch.no_grad():
        p = model(torch.tensor([ids]))[0, -1].double().softmax(-1)
        q = model(torch.tensor([ids]), sense_scales=scales)[0, -1].double().softmax(-1)
    assert report["before"] == pytest.approx(float(max(p[he] / p[she], p[she] / p[he])), rel=1e-5)
    assert report["after"] == pytest.approx(float(max(q[he] / q[she], q[she] / q[he])), rel=1e-5)
    assert report["after"] != pytest.approx(report["before"], rel=1e-6)


def test_bias_ratio_survives_probabilities_that_underflow(loaded):
    """Sense 1 of ' nurse' x100 pushes p(she) below fp32's smallest number: the ratio comes
    from log-probabilities, and a ratio beyond a float is a named error."""
    model, tokenizer = loaded
    template = "When the {} came into the room,"
    ids = tokenizer.encode(template.format("nurse"))
    scales = sense_scales_for(model, tokenizer, ids, [SenseScale("nurse", 1, 100.0)])
    he, she = tokenizer.encode(" he")[0], tokenizer.encode(" she")[0]
    with torch.no_grad():
        logits = model(torch.tensor([ids]), sense_scales=scales)[0, -1]
    assert float(logits.softmax(-1)[she]) == 0.0  # the old p(he)/p(she) divided by zero here
    logp = logits.double().log_softmax(-1)
    report = bias_report(model, tokenizer, ["nurse"], templates=(template,), sense=1, factor=100.0)
    assert report["after"] == pytest.approx(math.exp(abs(float(logp[he] - logp[she]))), rel=1e-9)
    assert bias_ratio(-1000.0, -1003.0) == pytest.approx(math.exp(3))
    with pytest.raises(SenseToolError, match=r"exceeds 1e\+300 with sense 1 x1e\+30; use a factor closer to 1"):
        bias_report(model, tokenizer, ["nurse"], templates=(template,), sense=1, factor=1e30)


def run_cli(capsys, *argv):
    main(list(map(str, argv)))
    return capsys.readouterr().out


def test_cli_tables(backpack_dir, capsys):
    out = run_cli(capsys, "lookup", "--checkpoint", backpack_dir, "--word", " science", "--top", 3)
    assert "token ' science' (id 3783)" in out and out.count("sense  3 ") == 2
    out = run_cli(capsys, "predict", "--checkpoint", backpack_dir, "--text", NURSE, "--scale", "nurse:1=0,the:0=2")
    assert "before" in out and "after" in out and len(out.strip().splitlines()) == 3 + 10
    out = run_cli(capsys, "edit", "--checkpoint", backpack_dir, "--max_new_tokens", 4)
    assert "' Apple' -> ' HP'" in out and "before: p(' Apple')" in out and " after: " in out
    out = run_cli(capsys, "generate", "--checkpoint", backpack_dir, "--prompt", "The game", "--topic", "science",
                  "--max_new_tokens", 4)
    assert "plain (" in out and "steered (" in out
    out = run_cli(capsys, "bias", "--checkpoint", backpack_dir, "--sense", 1, "--professions", "nurse,doctor")
    assert "nurse" in out and "mean he/she bias ratio" in out and " -> " in out


@pytest.mark.parametrize("argv, message", [
    (["predict", "--text", NURSE, "--scale", "cat:1=0"], "the word 'cat' does not occur"),
    (["predict", "--text", NURSE, "--scale", "nurse:9=0"], "sense 9 of 'nurse' is out of range"),
    (["predict", "--text", NURSE, "--scale", "nurse=0"], "bad scale 'nurse=0'"),
    (["predict", "--text", " "], "the text is empty"),
    (["predict", "--text", "word " * 80], "this model reads at most 64"),
    (["bias", "--sense", 7], "sense 7 is out of range"),
    (["lookup", "--word", "nurse", "--top", 0], "--top must be >= 1, got 0"),
    (["lookup", "--word", "nurse", "--top", -5], "--top must be >= 1, got -5"),
    (["lookup", "--word", "nurse", "--top", "abc"], "--top must be an integer, got 'abc'"),
    (["lookup", "--word", "nurse", "--device", "foo"], "unknown --device 'foo': use cpu, cuda or cuda:N"),
    (["lookup", "--word", "nurse", "--device", "cuda:99"], "--device cuda:99"),
    (["generate", "--prompt", "The", "--top_k", -3], "--top_k must be >= 0, got -3"),
    (["bias", "--factor", "abc"], "--factor must be a number, got 'abc'"),
    (["bias", "--sense", 1, "--factor", 1e30, "--professions", "nurse"], "exceeds 1e+300 with sense 1 x1e+30"),
    (["predict", "--text", NURSE, "--scale", "nurse:*=1e38"],
     "not finite (overflow or NaN) with --scale nurse:*=1e+38; use a smaller factor"),
    (["predict", "--text", NURSE, "--scale", "nurse:*=1e38", "--json"], "with --scale nurse:*=1e+38"),
])
def test_cli_errors_are_one_line_with_exit_2(backpack_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, argv), "--checkpoint", str(backpack_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert "NaN" not in capsys.readouterr().out


def test_lookup_of_a_special_token_shows_that_token_only(backpack_dir, capsys):
    data = json.loads(run_cli(capsys, "lookup", "--checkpoint", backpack_dir, "--word", "<|endoftext|>", "--top", 1,
                              "--json"))
    assert [(entry["id"], entry["token"]) for entry in data] == [(50256, "<|endoftext|>")]


def test_text_flags_stay_text_in_a_real_command_line(backpack_dir):
    """fire reads 3.10 as the number 3.1 and 1,000 as the tuple (1, 0) unless told otherwise."""
    result = subprocess.run([sys.executable, "-m", "backpack_dist.senses", "lookup", "--checkpoint", str(backpack_dir),
                             "--word", "3.10", "--top", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [entry["token"] for entry in json.loads(result.stdout)] == [" 3", ".", "10"]


@pytest.mark.parametrize("argv, key, expected", [
    (["lookup", "--word", "1,000"], None, [" 1", ",", "000"]),
    (["predict", "--text", "1,000"], "tokens", ["1", ",", "000"]),
    (["generate", "--prompt", "3.10", "--max_new_tokens", 1], "prompt", "3.10"),
    (["edit", "--target", "3.10", "--prompt", "3.10", "--old", "1", "--new", "2", "--max_new_tokens", 1], "prompt",
     "3.10"),
])
def test_text_flags_are_not_python_literals(backpack_dir, capsys, argv, key, expected):
    data = json.loads(run_cli(capsys, *argv, "--checkpoint", backpack_dir, "--json"))
    got = [entry["token"] for entry in data] if key is None else data[key]
    assert got == expected


def test_edit_target_is_taken_as_typed(backpack_dir, capsys):
    data = json.loads(run_cli(capsys, "edit", "--checkpoint", backpack_dir, "--target", "1,000", "--prompt",
                              "It costs 1,000", "--max_new_tokens", 1, "--json"))
    assert data["edit"]["target"] == [" 1", ",", "000"]


@pytest.mark.parametrize("argv, warning", [
    (["generate", "--prompt", "The game", "--topic", "science,xqzvbn", "--max_new_tokens", 1],
     "warning: topic words of several tokens steer towards all their pieces: "
     "'xqzvbn' is ' x' + 'q' + 'z' + 'v' + 'bn'"),
    (["edit", "--target", "Zorblax", "--prompt", "The Zorblax is made by", "--max_new_tokens", 1],
     "warning: the target 'Zorblax' is 4 tokens (' Z' + 'or' + 'bl' + 'ax'); each of them is edited wherever"),
    (["edit", "--prompt", "The laptop is made by", "--max_new_tokens", 1],
     "warning: the prompt 'The laptop is made by' does not contain the target 'MacBook'"),
])
def test_surprising_word_splits_are_warned_about(backpack_dir, capsys, argv, warning):
    main([*map(str, argv), "--checkpoint", str(backpack_dir)])
    err = capsys.readouterr().err
    assert err.startswith(warning) and err.count("\n") == 1


@pytest.mark.parametrize("command, shown", [
    ("lookup", ["Top and bottom vocabulary items", "--word TEXT  (or the value alone, in order)", "--top INT\n"
                "      Top and bottom items per sense. (default: 10)", "--relative / --norelative"]),
    ("predict", ["Next-word probabilities", "--text TEXT  (or the value alone", "--scale TEXT"]),
    ("edit", ["Knowledge edit", "--prompt TEXT\n      The prompt to generate from, before and after the edit. "
              "(default: The MacBook is made by)"]),
    ("generate", ["Sample a continuation", "--strength FLOAT"]),
    ("bias", ["He/she bias ratio", "--factor FLOAT"]),
])
def test_help_shows_the_flags_only(capsys, command, shown):
    """--help is generated from the command's options: every flag with its type, docstring and default."""
    main([command, "--help"])
    out = capsys.readouterr().out
    assert "FIRE_METADATA" not in out and "Optional" not in out and "--checkpoint TEXT" in out
    for text in shown:
        assert text in out


def test_transformer_checkpoint_is_refused_clearly(transformer_dir):
    result = subprocess.run([sys.executable, "-m", "backpack_dist.senses", "lookup", "--checkpoint",
                             str(transformer_dir), "--word", "nurse"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: this checkpoint is a Transformer; sense tools need a Backpack"
