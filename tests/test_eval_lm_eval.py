"""lm-evaluation-harness integration: the "backpack" model returns our Scorer's log-likelihoods
for the same requests, and `lm_eval --model backpack` runs from the shell once the hook is
installed, giving the same LAMBADA and WikiText figures as `python -m backpack_dist.eval`."""

import json
import math
import os
import subprocess
import sys

import pytest
from lm_eval.api.instance import Instance

from backpack_dist.eval.lambada import evaluate_lambada, lambada_requests, load_lambada
from backpack_dist.eval.scoring import Scorer
from backpack_dist.eval.wikitext import detokenize, evaluate_wikitext, load_wikitext
from backpack_dist.pretrained import load_pretrained


def instances(request_type, args_list):
    return [Instance(request_type=request_type, doc={}, arguments=args, idx=i) for i, args in enumerate(args_list)]


@pytest.mark.parametrize("family", ["backpack", "transformer"])
def test_lm_eval_loglikelihoods_equal_ours(eval_models, shared_data, family):
    from backpack_dist.eval.lm_eval_model import BackpackLMEval

    texts, _ = load_lambada(shared_data / "lambada_openai" / "lambada_test.jsonl", limit=10)
    lm = BackpackLMEval(checkpoint=str(eval_models[family]), device="cpu", batch_size=3)
    model, enc, _ = load_pretrained(eval_models[family])
    ours = Scorer(model, enc.eot_token, batch_size=7, progress=False)

    pairs = [(t.rsplit(" ", 1)[0], " " + t.rsplit(" ", 1)[1]) for t in texts]
    pairs += [("", "The cat sat on the mat."), ("Trailing space ", "moves")]  # empty context, context ending in " "
    theirs = lm.loglikelihood(instances("loglikelihood", pairs))
    expected = ours.loglikelihoods(lambada_requests(texts, enc))
    expected += ours.loglikelihoods([([], enc.encode_ordinary("The cat sat on the mat.")),
                                     (enc.encode_ordinary("Trailing space"), enc.encode_ordinary(" moves"))])
    for (ll, greedy), (ref_ll, ref_greedy) in zip(theirs, expected, strict=True):
        assert math.isclose(ll, ref_ll, rel_tol=1e-6) and greedy == ref_greedy

    articles, _ = load_wikitext(shared_data / "wikitext2" / "wiki.test.raw", limit=2)
    docs = [detokenize(a[:2000]) for a in articles]
    rolling = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(d,) for d in docs]))
    reference = ours.rolling_loglikelihoods([enc.encode_ordinary(d) for d in docs])
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(rolling, reference, strict=True))

    out = lm.generate_until(instances("generate_until", [("The", {"until": ["\n"], "max_gen_toks": 5})]))
    assert isinstance(out[0], str) and "\n" not in out[0]


LAMBADA_TASK = """task: lambada_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def lm_eval_lambada(tmp_path, shared_data, model: str, model_args: str, *flags: str, site=None) -> dict:
    """`lm_eval --model MODEL --model_args ARGS FLAGS...` on LAMBADA's first 8 texts (a local yaml task, no
    download) in a fresh interpreter, offline; also adds `site` (our .pth hook) when given. Its
    lambada_local results."""
    lines = (shared_data / "lambada_openai" / "lambada_test.jsonl").read_text().splitlines()[:8]
    (tmp_path / "lambada8.jsonl").write_text("\n".join(lines) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "lambada_local.yaml").write_text(LAMBADA_TASK.format(path=tmp_path / "lambada8.jsonl"))
    argv = ["lm_eval", "--model", model, "--model_args", model_args, "--tasks", "lambada_local",
            "--include_path", str(tasks), "--output_path", str(tmp_path / "out"), *flags]
    add_site = f"import site; site.addsitedir({str(site)!r}); " if site else ""
    script = f"{add_site}import sys; sys.argv = {argv!r}; from lm_eval.__main__ import cli_evaluate; cli_evaluate()"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    result_file = next((tmp_path / "out").rglob("results_*.json"))
    return json.loads(result_file.read_text())["results"]["lambada_local"]


def our_lambada(export, texts_file) -> dict:
    model, enc, _ = load_pretrained(export)
    texts, _ = load_lambada(texts_file)
    return evaluate_lambada(Scorer(model, enc.eot_token, progress=False), enc, texts)


@pytest.mark.slow
def test_lm_eval_command_line_matches_our_harness(eval_models, shared_data, tmp_path):
    """`lm_eval --model backpack` from a fresh interpreter whose site dir holds only our .pth hook."""
    from backpack_dist.eval.lm_eval_hook import install

    site = tmp_path / "site"
    site.mkdir()
    install(site)
    # batch_size and device in --model_args, as docs/eval.md shows: lm_eval also passes its own defaults.
    got = lm_eval_lambada(tmp_path, shared_data, "backpack",
                          f"checkpoint={eval_models['backpack']},batch_size=4,device=cpu", site=site)
    ours = our_lambada(eval_models["backpack"], tmp_path / "lambada8.jsonl")
    assert math.isclose(got["perplexity,none"], ours["ppl"], rel_tol=1e-5)
    assert math.isclose(got["acc,none"], ours["acc"], abs_tol=1e-9)


@pytest.mark.slow
def test_lm_eval_hf_runs_on_a_transformer_exported_to_hf(eval_models, shared_data, tmp_path):
    """`lm_eval --model hf --model_args pretrained=DIR` on `convert to-hf`'s folder: transformers'
    own GPT2LMHeadModel and tokenizer, no hook, and the figures of our harness on our export."""
    hf_dir = tmp_path / "hf"
    convert = subprocess.run([sys.executable, "-m", "backpack_dist.convert", "to-hf", str(eval_models["transformer"]),
                              "--out", str(hf_dir)], capture_output=True, text=True, timeout=300)
    assert convert.returncode == 0, convert.stderr[-2000:]
    got = lm_eval_lambada(tmp_path, shared_data, "hf", f"pretrained={hf_dir},dtype=float32",
                          "--batch_size", "4", "--device", "cpu")
    ours = our_lambada(eval_models["transformer"], tmp_path / "lambada8.jsonl")
    assert math.isclose(got["perplexity,none"], ours["ppl"], rel_tol=1e-4)
    assert math.isclose(got["acc,none"], ours["acc"], abs_tol=1e-9)


def test_hook_registers_backpack_in_a_fresh_interpreter(tmp_path):
    """The .pth hook imports nothing heavy at start-up and registers "backpack" once lm_eval loads its models."""
    from backpack_dist.eval.lm_eval_hook import install

    install(tmp_path)
    script = (f"import site, sys; site.addsitedir({str(tmp_path)!r}); "
              "assert 'torch' not in sys.modules and 'lm_eval' not in sys.modules; "
              "from lm_eval.api.registry import get_model, model_registry; "
              "print(get_model('backpack').__name__, 'hf' in model_registry)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["BackpackLMEval", "True"]  # lm_eval's own models stay registered


def test_wikitext_rolling_through_lm_eval_equals_ours(eval_models, shared_data):
    """Word perplexity from the adapter's rolling log-likelihoods equals evaluate_wikitext's."""
    from backpack_dist.eval.lm_eval_model import BackpackLMEval

    articles, _ = load_wikitext(shared_data / "wikitext2" / "wiki.test.raw", limit=1)
    articles = [articles[0][:2500]]
    lm = BackpackLMEval(checkpoint=str(eval_models["transformer"]), device="cpu")
    nll = -sum(lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(detokenize(a),) for a in articles])))
    ours = evaluate_wikitext(lm.scorer, lm.tokenizer, articles)
    assert math.isclose(math.exp(nll / ours["words"]), ours["word_ppl"], rel_tol=1e-9)
