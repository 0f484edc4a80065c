"""Sense probes: what the trainer records at each validation equals what the sense tools compute
on the same weights, and `senses history` reads it back from metrics.jsonl."""

import json

import pytest
from sense_checkpoints import make_checkpoint

from backpack_dist.pretrained import load_pretrained
from backpack_dist.senses.__main__ import main
from backpack_dist.senses.intervention import next_token_probs
from backpack_dist.senses.lookup import lookup_word
from backpack_dist.senses.probes import DEFAULT_WORDS, PROMPT, measure


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for family in ("backpack", "transformer"):
        out[family] = load_pretrained(make_checkpoint(tmp_path_factory.mktemp(family), family))[:2]
    return out


def test_probes_equal_the_sense_tools(models):
    model, tokenizer = models["backpack"]
    model.train()
    probes = measure(model, tokenizer)
    assert model.training  # the probe leaves the training mode as it found it
    assert sorted(probes["senses"]) == sorted(DEFAULT_WORDS)
    for word in DEFAULT_WORDS:
        expected = [[i["token"] for i in s["top"]] for s in lookup_word(model.eval(), tokenizer, word, 5)[0]["senses"]]
        assert probes["senses"][word] == expected and len(expected) == model.config.n_senses
    probs = next_token_probs(model, tokenizer.encode(PROMPT))
    assert probes["pronouns"] == {" she": float(probs[tokenizer.encode(" she")[0]]),
                                  " he": float(probs[tokenizer.encode(" he")[0]])}


def test_a_transformer_gets_the_pronouns_only(models):
    model, tokenizer = models["transformer"]
    probes = measure(model, tokenizer)
    assert set(probes) == {"pronouns"} and 0 < probes["pronouns"][" she"] < 1


def test_history_shows_each_sense_over_the_probes(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": 10, "loss": 3.0},
             {"step": 10, "val_loss": 3.1, "probes": {"senses": {" science": [["a", "b"], ["c", "d"]]}}},
             {"step": 20, "val_loss": 2.9, "probes": {"senses": {" science": [["a", "b"], ["e", "d"]]}}}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 3')
    main(["history", str(run), "--word", " science"])
    out = capsys.readouterr().out
    assert "step 10:" in out and "step 20:" in out
    assert "sense  1 * 'e'  'd'" in out and "sense  0   'a'  'b'" in out.split("step 20:")[1]
    main(["history", str(run), "--word", " science", "--json"])
    assert json.loads(capsys.readouterr().out) == [{"step": 10, "senses": [["a", "b"], ["c", "d"]]},
                                                   {"step": 20, "senses": [["a", "b"], ["e", "d"]]}]
    with pytest.raises(SystemExit) as exit_info:
        main(["history", str(run), "--word", " bank"])
    assert exit_info.value.code == 2
    assert "has no sense probes of ' bank'; its probe words are ' science'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("zero,nprocs", [(2, 1), (3, 2)])
def test_training_records_probes_at_each_validation(wikitext_data, tmp_path, capsys, zero, nprocs):
    from train_helpers import metrics, run_training, tiny_run_args

    run = tmp_path / "run"
    args = tiny_run_args("backpack-micro", wikitext_data, run, zero=zero, steps=4,
                         extra=["--eval_every", "2", "--save_every", "4", "--wandb", "offline"])
    result = run_training(nprocs, args)
    assert result.returncode == 0, result.stderr[-3000:]
    probed = [m for m in metrics(run) if "probes" in m]
    assert [m["step"] for m in probed] == [2, 4] and all("val_loss" in m for m in probed)
    for m in probed:
        assert sorted(m["probes"]["senses"]) == sorted(DEFAULT_WORDS)
        for senses in m["probes"]["senses"].values():
            assert len(senses) == 4 and all(len(top) == 5 for top in senses)
        assert set(m["probes"]["pronouns"]) == {" she", " he"} and m["probe_seconds"] > 0
    # the probes of the last validation are the sense tools' reading of the final checkpoint
    model, tokenizer, _ = load_pretrained(run / "checkpoints" / "step_00000004")
    assert probed[-1]["probes"] == measure(model, tokenizer)
    main(["history", str(run), "--word", " nurse"])
    assert "step 2:" in capsys.readouterr().out


@pytest.mark.slow
def test_noprobes_turns_them_off(wikitext_data, tmp_path):
    from train_helpers import metrics, run_training, tiny_run_args

    run = tmp_path / "run"
    result = run_training(1, tiny_run_args("backpack-micro", wikitext_data, run, zero=0, steps=2,
                                           extra=["--eval_every", "1"]) + ["--noprobes"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m for m in metrics(run) if "val_loss" in m] and not [m for m in metrics(run) if "probes" in m]
