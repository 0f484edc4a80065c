"""The evaluation harness: every batched metric against a brute-force computation (one example
at a time) on tiny trained and random GPT-2-vocabulary models, with LAMBADA and WikiText from
../shared/data and BLiMP / similarity / OWT fixtures written here in their original formats."""

import json
import math
import os
import random
import re
import shutil
import stat

import numpy as np
import pytest
import torch
from eval_fixtures import SEQ_LEN, TINY, brute_loglikelihood, brute_rolling
from train_helpers import with_flags

from backpack_dist.eval.__main__ import main
from backpack_dist.eval.blimp import SUBTASKS, evaluate_blimp, load_blimp
from backpack_dist.eval.lambada import evaluate_lambada, load_lambada, split_passage
from backpack_dist.eval.owt import chunk_documents, evaluate_owt, load_owt
from backpack_dist.eval.scoring import Scorer, rolling_windows
from backpack_dist.eval.similarity import evaluate_similarity, load_similarity, spearman
from backpack_dist.eval.wikitext import detokenize, evaluate_wikitext, load_wikitext, read_raw
from backpack_dist.pretrained import load_pretrained


@pytest.fixture(scope="module")
def loaded(eval_models):
    return {name: load_pretrained(path) for name, path in eval_models.items()}


def close(a, b, rel=1e-4):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-4)


@pytest.mark.parametrize("family", ["backpack", "transformer"])
def test_scorer_matches_brute_force(loaded, family):
    model, enc, _ = loaded[family]
    rng = random.Random(0)
    requests = []
    for _ in range(13):
        context = [rng.randrange(50257) for _ in range(rng.choice([0, 1, 5, 30, 90]))]  # 90 > seq_len: cut
        requests.append((context, [rng.randrange(50257) for _ in range(rng.choice([1, 3, 20]))]))
    requests.append(([5, 6], [7]))
    with torch.no_grad():
        model(torch.tensor([[5, 6]]))
        top = int(model(torch.tensor([[5, 6]]))[0, -1].argmax())
    requests.append(([5, 6], [top]))  # a greedy continuation
    expected = [brute_loglikelihood(model, c, t, enc.eot_token) for c, t in requests]
    assert expected[-1][1] and not expected[-2][1]
    for batch_size in (1, 4, 16):
        got = Scorer(model, enc.eot_token, batch_size=batch_size, progress=False).loglikelihoods(requests)
        for (ll, greedy), (ref_ll, ref_greedy) in zip(got, expected, strict=True):
            assert close(ll, ref_ll) and greedy == ref_greedy


def test_bf16_autocast_stays_close_to_fp32(loaded):
    """The GPU path (bf16 autocast, fp32 log-softmax) run on CPU: same scores to bf16 precision."""
    model, enc, _ = loaded["backpack"]
    requests = [(list(range(100, 100 + n)), [11, 12, 13]) for n in (0, 7, 40)]
    fp32 = Scorer(model, enc.eot_token, dtype=torch.float32, progress=False).loglikelihoods(requests)
    bf16 = Scorer(model, enc.eot_token, dtype=torch.bfloat16, progress=False).loglikelihoods(requests)
    assert all(math.isclose(a, b, rel_tol=0.03) for (a, _), (b, _) in zip(fp32, bf16, strict=True))


def test_rolling_windows_score_each_token_once_with_bounded_context():
    for n in (1, 5, SEQ_LEN - 1, SEQ_LEN, SEQ_LEN + 1, 3 * SEQ_LEN + 7):
        tokens = list(range(1000, 1000 + n))
        windows = rolling_windows(tokens, SEQ_LEN, eot_token=7)
        assert [t for _, cont in windows for t in cont] == tokens
        assert all(len(ctx) + len(cont) <= SEQ_LEN + 1 and ctx for ctx, cont in windows)
        assert windows[0][0] == [7]
        if n > SEQ_LEN:  # the last window is filled with earlier tokens
            assert len(windows[-1][0]) + len(windows[-1][1]) == SEQ_LEN + 1


def test_rolling_loglikelihood_matches_brute_force(loaded):
    model, enc, _ = loaded["backpack"]
    docs = [list(range(300, 300 + n)) for n in (3, SEQ_LEN, 2 * SEQ_LEN + 9)]
    got = Scorer(model, enc.eot_token, batch_size=3, progress=False).rolling_loglikelihoods(docs)
    for ll, doc in zip(got, docs, strict=True):
        assert close(ll, brute_rolling(model, doc, enc.eot_token))


def test_lambada_matches_brute_force(loaded, shared_data):
    texts, record = load_lambada(shared_data / "lambada_openai" / "lambada_test.jsonl", limit=12)
    assert len(texts) == 12 and record["examples"] == 12 and len(next(iter(record["files"].values()))) == 64
    assert split_passage("a b c") == ("a b", " c")
    for name in ("backpack", "transformer"):
        model, enc, _ = loaded[name]
        metrics = evaluate_lambada(Scorer(model, enc.eot_token, batch_size=5, progress=False), enc, texts)
        brute = []
        for text in texts:
            context, target = text.rsplit(" ", 1)
            brute.append(brute_loglikelihood(model, enc.encode_ordinary(context), enc.encode_ordinary(" " + target),
                                             enc.eot_token))
        assert close(metrics["ppl"], math.exp(-sum(ll for ll, _ in brute) / len(brute)))
        assert metrics["acc"] == sum(g for _, g in brute) / len(brute)


def test_lambada_splits_at_the_last_space_as_lm_eval_does(shared_data):
    """The full OpenAI file passes the reader; 7 targets keep a newline inside their last "word" on purpose."""
    texts, _ = load_lambada(shared_data / "lambada_openai" / "lambada_test.jsonl")
    targets = [split_passage(text)[1] for text in texts]
    assert len(texts) == 5153 and sum("\n" in t for t in targets) == 7 and " of\n\nPower" in targets
    assert split_passage("the sense of\n\nPower") == ("the sense", " of\n\nPower")


def test_wikitext_matches_brute_force(loaded, shared_data):
    path = shared_data / "wikitext2" / "wiki.test.raw"
    assert len(read_raw(path)) == 62  # the WikiText-2/103 test articles
    assert detokenize(" = A = \n It 's 1 @,@ 000 @-@ odd ( see \" here \" ) . \n") == \
        " = A =\nIt's 1,000-odd (see \"here\").\n"
    articles, _ = load_wikitext(path, limit=2)
    articles = [a[:3000] for a in articles]  # keep the brute force quick
    model, enc, _ = loaded["transformer"]
    metrics = evaluate_wikitext(Scorer(model, enc.eot_token, batch_size=8, progress=False), enc, articles)
    nll = -sum(brute_rolling(model, enc.encode_ordinary(detokenize(a)), enc.eot_token) for a in articles)
    words = sum(len(re.split(r"\s+", a)) for a in articles)  # lm-evaluation-harness's count
    n_bytes = sum(len(a.encode()) for a in articles)
    tokens = sum(len(enc.encode_ordinary(detokenize(a))) for a in articles)
    assert (metrics["words"], metrics["bytes"], metrics["tokens"]) == (words, n_bytes, tokens)
    assert close(metrics["word_ppl"], math.exp(nll / words))
    assert close(metrics["token_ppl"], math.exp(nll / tokens))
    assert close(metrics["byte_ppl"], math.exp(nll / n_bytes))
    assert close(metrics["bits_per_byte"], nll / n_bytes / math.log(2))
    # The metric means something: a few dozen training steps beat a random model by far.
    random_model, _, _ = loaded["random"]
    untrained = evaluate_wikitext(Scorer(random_model, enc.eot_token, batch_size=8, progress=False), enc, articles)
    assert metrics["token_ppl"] < untrained["token_ppl"] / 5, (metrics["token_ppl"], untrained["token_ppl"])


def write_blimp(directory, sizes):
    """BLiMP's original files: UID.jsonl, one JSON pair per line with its metadata fields."""
    directory.mkdir(parents=True, exist_ok=True)
    good = ["The cats sleep.", "Many dogs bark loudly.", "She has eaten the cake.", "Who did you see?",
            "Every child laughs.", "The doors were opened."]
    bad = ["The cats sleeps.", "Many dogs barks loudly.", "She has ate the cake.", "Who did you saw?",
           "Every child laugh.", "The doors was opened."]
    for uid, n in zip(SUBTASKS, sizes, strict=False):
        with open(directory / f"{uid}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"sentence_good": good[i], "sentence_bad": bad[i], "field": "syntax",
                                    "linguistics_term": "x", "UID": uid, "simple_LM_method": True,
                                    "one_prefix_method": False, "two_prefix_method": False,
                                    "lexically_identical": False, "pairID": str(i)}) + "\n")
    return directory


def test_blimp_matches_brute_force(loaded, tmp_path):
    data, record = load_blimp(write_blimp(tmp_path / "blimp", sizes=[6, 3, 2]))
    assert list(data) == sorted(SUBTASKS[:3]) and record["examples"] == 3
    model, enc, _ = loaded["backpack"]
    metrics = evaluate_blimp(Scorer(model, enc.eot_token, batch_size=4, progress=False), enc, data)
    per_task = {}
    for uid, pairs in data.items():
        right = [brute_loglikelihood(model, [], enc.encode_ordinary(p["sentence_good"]), enc.eot_token)[0] >
                 brute_loglikelihood(model, [], enc.encode_ordinary(p["sentence_bad"]), enc.eot_token)[0]
                 for p in pairs]
        per_task[uid] = sum(right) / len(right)
        assert metrics[f"acc/{uid}"] == per_task[uid]
    assert close(metrics["acc"], sum(per_task.values()) / 3)  # the mean over sub-tasks, not over pairs
    assert metrics["subtasks"] == 3 and metrics["examples"] == 11
    limited, _ = load_blimp(tmp_path / "blimp", limit=2)
    assert all(len(p) == 2 for p in limited.values())


@pytest.fixture(scope="module")
def owt_prep(shared_data, tmp_path_factory):
    """Real data-prep output (OUT/val MDS + OUT/dataset.json) from 100 WebText documents."""
    import data_prep

    docs = tmp_path_factory.mktemp("owt_docs") / "docs.jsonl"
    lines = (shared_data / "openwebtext_sample" / "webtext_gpt2_train_subset.jsonl").read_text().splitlines()
    docs.write_text("\n".join(lines[:100]) + "\n")
    out = tmp_path_factory.mktemp("owt_prep")
    data_prep.prepare_and_merge([str(docs)], out, seq_len=SEQ_LEN, tokenizer="gpt2", val_fraction=0.03)
    return out


def test_owt_matches_brute_force(loaded, owt_prep):
    import data_prep

    model, enc, info = loaded["backpack"]
    samples, record = load_owt(owt_prep, enc, SEQ_LEN, info["tokenizer_fingerprint"])
    assert record["source"] == "local" and any(f.endswith("dataset.json") for f in record["files"])
    # Independently: the val documents, each followed by end-of-text, cut into overlapping samples.
    docs = [d.tolist() for d in data_prep.iter_document_tokens(owt_prep, "val")]
    assert samples == chunk_documents(docs, SEQ_LEN, enc.eot_token) and len(samples) > 3
    assert len(samples[-1]) < SEQ_LEN + 1  # a shorter last sample
    metrics = evaluate_owt(Scorer(model, enc.eot_token, batch_size=4, progress=False), samples)
    with torch.no_grad():
        losses = [(float(model(torch.tensor([s[:-1]]), targets=torch.tensor([s[1:]]))), len(s) - 1) for s in samples]
    tokens = sum(n for _, n in losses)
    assert metrics["tokens"] == tokens
    assert close(metrics["ppl"], math.exp(sum(loss * n for loss, n in losses) / tokens))
    assert load_owt(owt_prep, enc, SEQ_LEN, info["tokenizer_fingerprint"], limit=2)[0] == samples[:2]
    with pytest.raises(ValueError, match="tokenizer"):
        load_owt(owt_prep, enc, SEQ_LEN, "0000000000000000")
    with pytest.raises(ValueError, match="context is 32; prepare the validation data with --seq_len 32"):
        evaluate_owt(Scorer(load_pretrained_small(model), enc.eot_token, progress=False), samples)


def test_owt_data_for_another_context_is_refused(owt_prep, tmp_path):
    """Data cut for seq_len 64 would score shorter contexts than a 128-token model sees."""
    import shutil

    _, record = load_owt(owt_prep, None, SEQ_LEN, None, limit=2)
    assert record["seq_len"] == SEQ_LEN
    with pytest.raises(ValueError, match=r"dataset.json was prepared with seq_len 64 but the model's context is 128; "
                                         r"prepare the validation data with --seq_len 128"):
        load_owt(owt_prep, None, 128, None)
    shutil.copytree(owt_prep / "val", tmp_path / "val")  # no dataset.json: the samples' length tells
    with pytest.raises(ValueError, match=r"cut for seq_len 64 but the model's context is 128; .* --seq_len 128"):
        load_owt(tmp_path, None, 128, None)
    assert load_owt(tmp_path, None, SEQ_LEN, None)[1]["seq_len"] == SEQ_LEN


def load_pretrained_small(model):
    """The same weights with a shorter context, to check the seq_len mismatch message."""
    from backpack_dist.model import model_from_config
    from backpack_dist.model.config import ModelConfig

    cfg = ModelConfig.from_dict({**model.config.to_dict(), "seq_len": 32})
    small = model_from_config(cfg)
    state = {k: v[:32] if k == "body.wpe.weight" else v for k, v in model.state_dict().items()}
    small.load_state_dict(state)
    return small.eval()


PAIRS = [("old", "new", 1.58), ("smart", "intelligent", 9.2), ("hard", "difficult", 8.77), ("happy", "cheerful", 9.55),
         ("hard", "easy", 0.95), ("fast", "rapid", 8.75), ("car", "automobile", 8.94), ("bird", "cock", 5.0),
         ("tiger", "cat", 7.35), ("journey", "voyage", 9.29), ("stock", "market", 8.08)]


# Per set, the pairs and scores its fixture files hold (scores as written, so they parse back exactly).
SIM_PAIRS = {"simlex": PAIRS, "simverb": [(a, b, round(s / 1.1, 2)) for a, b, s in PAIRS],
             "rg65": [(a, b, round(s / 2.5, 2)) for a, b, s in PAIRS[:8]], "ws353": PAIRS}


def write_similarity(directory):
    """The four sets in their original text layouts."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "SimLex-999.txt", "w") as f:
        f.write("word1\tword2\tPOS\tSimLex999\tconc(w1)\tconc(w2)\tconcQ\tAssoc(USF)\tSimAssoc333\tSD(SimLex)\n")
        for a, b, s in SIM_PAIRS["simlex"]:
            f.write(f"{a}\t{b}\tA\t{s}\t2.72\t2.81\t2\t7.25\t1\t0.41\n")
    with open(directory / "SimVerb-3500.txt", "w") as f:
        for a, b, s in SIM_PAIRS["simverb"]:
            f.write(f"{a}\t{b}\tV\t{s}\tSYNONYMS\n")
    with open(directory / "RG65.txt", "w") as f:
        for a, b, s in SIM_PAIRS["rg65"]:
            f.write(f"{a};{b};{s}\n")
    with open(directory / "combined.tab", "w") as f:
        f.write("Word 1\tWord 2\tHuman (mean)\n")
        for a, b, s in SIM_PAIRS["ws353"]:
            f.write(f"{a}\t{b}\t{s}\n")
    return directory


COLLECTION_FILES = {"simlex": "EN-SIMLEX-999.txt", "simverb": "EN-SimVerb-3500.txt", "rg65": "EN-RG-65.txt",
                    "ws353": "EN-WS-353-ALL.txt"}


def write_collection(directory):
    """The same sets as the widely copied collection holds them: a subfolder of one file per set,
    word<TAB>word<TAB>score with no header, beside other sets' files and subsets (not to be used)."""
    sub = directory / "eval-word-vectors" / "data" / "word-sim"
    sub.mkdir(parents=True)
    for name, file_name in COLLECTION_FILES.items():
        (sub / file_name).write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in SIM_PAIRS[name]))
    for decoy in ("EN-SIMLEX-999-NOUN.txt", "EN-WS-353-SIM.txt", "EN-MEN-TR-3k.txt"):
        (sub / decoy).write_text("sun\tmoon\t1\ncar\tbus\t2\ncat\tdog\t3\n")
    return directory


def brute_embedding(model, enc, word):
    return model.output_embedding()[enc.encode_ordinary(" " + word)].mean(0)


def brute_senses(model, enc, word):
    ids = torch.tensor(enc.encode_ordinary(" " + word))
    return model.sense_network(model.wte(ids)).mean(0)  # (k, d)


def test_similarity_matches_brute_force(loaded, tmp_path):
    from scipy.stats import spearmanr

    data, records = load_similarity(write_similarity(tmp_path / "sim"), ["simlex", "simverb", "rg65", "ws353"])
    assert [len(v) for v in data.values()] == [11, 11, 8, 11] and set(records) == set(data)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 40), rng.normal(size=40)  # with ties
    assert math.isclose(spearman(x, y), spearmanr(x, y).statistic, rel_tol=1e-12)
    cos = torch.nn.functional.cosine_similarity
    for name in ("backpack", "transformer"):
        model, enc, _ = loaded[name]
        metrics = evaluate_similarity(model, enc, data["simlex"])
        human = [s for _, _, s in data["simlex"]]
        with torch.no_grad():
            ref = spearmanr(human, [float(cos(brute_embedding(model, enc, a), brute_embedding(model, enc, b), dim=0))
                                    for a, b, _ in data["simlex"]]).statistic
            assert math.isclose(metrics["embedding"], ref, abs_tol=1e-6)
            if name == "transformer":
                assert "sense_min" not in metrics
                continue
            sims = np.array([[float(cos(brute_senses(model, enc, a)[l], brute_senses(model, enc, b)[l], dim=0))
                              for l in range(4)] for a, b, _ in data["simlex"]])
        for l in range(4):
            assert math.isclose(metrics[f"sense_{l}"], spearmanr(human, sims[:, l]).statistic, abs_tol=1e-6)
        assert math.isclose(metrics["sense_min"], spearmanr(human, sims.min(1)).statistic, abs_tol=1e-6)
        assert metrics["best_sense_rho"] == max(metrics[f"sense_{l}"] for l in range(4))


def test_similarity_collection_format_reads_as_the_original_releases(tmp_path):
    from backpack_dist.model import build_model
    from backpack_dist.tokenizer import load_tokenizer

    names = list(SIM_PAIRS)
    original, original_records = load_similarity(write_similarity(tmp_path / "original"), names)
    found, records = load_similarity(write_collection(tmp_path / "collection"), names)
    assert original == found == SIM_PAIRS
    sub = tmp_path / "collection" / "eval-word-vectors" / "data" / "word-sim"
    for name in names:  # the set's own file was read, in the subfolder, and the scored content is the same
        assert list(records[name]["files"]) == [str(sub / COLLECTION_FILES[name])]
        assert records[name]["content_sha256"] == original_records[name]["content_sha256"]
    torch.manual_seed(0)
    model, enc = build_model("backpack-micro", **TINY).eval(), load_tokenizer("gpt2")
    for name in names:
        metrics = evaluate_similarity(model, enc, found[name], name=name)
        assert metrics == evaluate_similarity(model, enc, original[name], name=name)
        assert metrics["examples"] == len(SIM_PAIRS[name]) and -1 <= metrics["embedding"] <= 1

    # A linked folder is searched, and a link back up the tree is not followed round forever.
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "word-sim").symlink_to(sub)
    (sub / "up").symlink_to(tmp_path / "collection")
    assert load_similarity(tmp_path / "linked", names)[0] == SIM_PAIRS

    # Two copies of one file are one file; two different ones are a question the user answers.
    shutil.copy(sub / "EN-RG-65.txt", tmp_path / "collection" / "EN-RG-65.txt")
    assert load_similarity(tmp_path / "collection", ["rg65"])[0]["rg65"] == SIM_PAIRS["rg65"]
    (tmp_path / "collection" / "en-rg-65.txt").write_text("cat\tdog\t3\ncar\tbus\t2\nsun\tmoon\t1\n")
    with pytest.raises(ValueError, match=r"holds 3 different EN-RG-65.txt files \(.*\); remove the extra ones"):
        load_similarity(tmp_path / "collection", ["rg65"])

    # The collection has no header: a first line that is not a pair is an error, not skipped.
    headed = tmp_path / "headed"
    headed.mkdir()
    (headed / "EN-RG-65.txt").write_text("word1\tword2\tscore\n" + (sub / "EN-RG-65.txt").read_text())
    with pytest.raises(ValueError, match=r"EN-RG-65.txt line 1 is not in the RG-65 format: expected word1, word2 "
                                         r"and a numeric score in column 3; fix or remove the line"):
        load_similarity(headed, ["rg65"])
    # A set with no file: the message lists every name looked for.
    with pytest.raises(ValueError, match=r"no SimLex-999 file in .*headed or its subfolders \(looked for "
                                         r"SimLex-999.txt, SimLex999.txt, EN-SIMLEX-999.txt\); add one, or leave "
                                         r"simlex out of --tasks"):
        load_similarity(tmp_path / "headed", ["simlex"])


def test_similarity_without_variance_is_refused(tmp_path):
    from backpack_dist.model import build_model
    from backpack_dist.tokenizer import load_tokenizer

    (tmp_path / "RG65.txt").write_text("".join(f"{a};{b};2.5\n" for a, b, _ in PAIRS[:5]))
    with pytest.raises(ValueError, match=r"RG65.txt: all 5 human scores are 2.5, so the similarity set has no "
                                         r"variance"):
        load_similarity(tmp_path, ["rg65"])
    model = build_model("transformer-micro", **TINY).eval()
    with torch.no_grad():
        model.wte.weight.fill_(1.0)  # every word the same vector: every cosine is 1
    with pytest.raises(ValueError, match="rg65: the model gives every pair the same cosine for embedding"):
        evaluate_similarity(model, load_tokenizer("gpt2"), PAIRS, name="rg65")


def test_cli_writes_results_and_table(eval_models, shared_data, owt_prep, tmp_path, capsys):
    common = ["--owt_val_dir", str(owt_prep),
              "--lambada_path", str(shared_data / "lambada_openai" / "lambada_test.jsonl"),
              "--wikitext_path", str(shared_data / "wikitext2" / "wiki.test.raw"),
              "--blimp_dir", str(write_blimp(tmp_path / "blimp", [2, 2])),
              "--similarity_dir", str(write_similarity(tmp_path / "sim")), "--limit", "2", "--progress", "False"]
    old_umask = os.umask(0o027)
    try:
        for name in ("backpack", "transformer"):
            main(["--checkpoint", str(eval_models[name]), "--tasks", "owt,lambada,wikitext,blimp,similarity",
                  "--out", str(tmp_path / "results" / f"{name}.json"), *common])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "results" / "backpack.json").stat().st_mode) == 0o640  # umask's, not 0600
    report = json.loads((tmp_path / "results" / "backpack.json").read_text())
    assert report["data"]["owt"]["seq_len"] == SEQ_LEN
    assert report["model_name"] == "backpack-micro" and report["step"] == 30
    assert set(report["results"]) == {"owt", "lambada", "wikitext", "blimp", "simlex", "simverb", "rg65", "ws353"}
    assert report["results"]["lambada"]["examples"] == 2 and report["settings"]["limit"] == 2
    assert all(len(h) == 64 for h in report["data"]["lambada"]["files"].values())
    capsys.readouterr()
    main(["table", *sorted(str(p) for p in (tmp_path / "results").glob("*.json"))])
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| backpack-micro (custom size) @30"))
    lam = report["results"]["lambada"]
    assert f"| {lam['ppl']:.1f} |" in row and f"| {100 * lam['acc']:.1f} |" in row  # no paper figures: tiny model
    assert f"| {100 * report['results']['blimp']['acc']:.1f} [2/67 sub-tasks] |" in row  # not the paper's mean
    assert "| transformer-micro (custom size)" in table and "SimLex-999" in table
    # A result of the paper's Backpack-Micro size is shown beside the paper's numbers.
    from backpack_dist.model.config import model_config

    report["model"] = model_config("backpack-micro").to_dict()
    (tmp_path / "micro.json").write_text(json.dumps(report))
    main(["table", str(tmp_path / "micro.json")])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| backpack-micro @30"))
    assert f"{lam['ppl']:.1f} (110.0)" in row and f"{100 * lam['acc']:.1f} (24.7)" in row
    assert f"{report['results']['owt']['ppl']:.1f} (31.5)" in row
    assert f"{100 * report['results']['blimp']['acc']:.1f} [2/67 sub-tasks] (75.6)" in row
    # The same size trained with a shorter context is not the paper's model.
    report["model"]["seq_len"] = 128
    (tmp_path / "micro.json").write_text(json.dumps(report))
    main(["table", str(tmp_path / "micro.json")])
    assert "| backpack-micro (custom size) @30 (limit 2) |" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("results"), "has no 'results' of python -m backpack_dist.eval"),
    (lambda r: r.update(results={"lambada": 3}), "has no 'results' of python -m backpack_dist.eval"),
    (lambda r: r.update(format=7), "is not a results file of python -m backpack_dist.eval"),
    (lambda r: r.update(model=None), "lacks the 'model' or 'settings'"),
])
def test_table_refuses_broken_results_files(tmp_path, capsys, change, message):
    report = {"format": "backpack-dist-eval/1", "checkpoint": "/x", "model_name": "backpack-micro", "step": 1,
              "model": {}, "settings": {}, "results": {"lambada": {"ppl": 3.0, "acc": 0.5}}}
    change(report)
    (tmp_path / "r.json").write_text(json.dumps(report))
    with pytest.raises(SystemExit) as exit_info:
        main(["table", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"error: {tmp_path / 'r.json'} ") and message in err
    assert err.count("\n") == 1


def test_table_shows_ours_the_papers_number_and_the_difference(tmp_path):
    from backpack_dist.eval.results import render
    from backpack_dist.model.config import model_config

    def write(name, step, results, **model):
        report = {"format": "backpack-dist-eval/1", "checkpoint": f"/runs/{name}", "model_name": name.split("@")[0],
                  "step": step, "model": model_config(name.split("@")[0], **model).to_dict(), "settings": {},
                  "results": results}
        path = tmp_path / f"{name}-{step}-{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(report))
        return str(path)

    paths = [write("backpack-small", 100000, {"owt": {"ppl": 21.04}, "lambada": {"ppl": 25.0, "acc": 0.3812},
                                              "wikitext": {"word_ppl": 40.9}, "blimp": {"acc": 0.75, "subtasks": 67}}),
             write("transformer-small", 100000, {"blimp": {"acc": 0.8, "subtasks": 3}}),
             write("backpack-mini", 50000, {"owt": {"ppl": 30.0}}, n_senses=4),
             write("backpack-mini", 50000, {"owt": {"ppl": 25.5}}, n_senses=64),
             write("backpack-mini", 40000, {"owt": {"ppl": 33.0}}, n_senses=4)]  # not the ablation's step
    out = render(paths)
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("| backpack-small @100000 |"))
    # ours (paper) ours - paper, in the paper's unit, from the figures shown
    assert row == "| backpack-small @100000 | 21.0 (20.1) +0.9 | 25.0 (26.5) -1.5 | 38.1 (37.5) +0.6 | " \
                  "40.9 (40.9) +0.0 | 75.0 (76.3) -1.3 |"
    row = next(line for line in lines if line.startswith("| transformer-small @100000 |"))
    assert row.endswith("| - (20.2) | - (32.7) | - (34.9) | - (42.2) | 80.0 [3/67 sub-tasks] (81.9) |")  # no diff
    assert "ours - paper" in out and "lower is better" in out
    ablation = lines[lines.index("| senses k | run | OWT PPL |"):]
    assert ablation[2:] == ["| 4 | backpack-mini (custom size) @50000 | 30.0 (29.3) +0.7 |",
                            "| 64 | backpack-mini (custom size) @50000 | 25.5 (24.0) +1.5 |"]


def test_text_flags_stay_text(eval_models, tmp_path, capsys, monkeypatch):
    """fire would read --out 1e3 as the number 1000.0 and a results file named 2024 as an int."""
    monkeypatch.chdir(tmp_path)
    main(["--checkpoint", str(eval_models["backpack"]), "--tasks", "simlex", "--similarity_dir",
          str(write_similarity(tmp_path / "sim")), "--out", "1e3"])
    assert (tmp_path / "1e3").is_file() and not (tmp_path / "1000.0").exists()
    summary = capsys.readouterr().out
    assert "sense_min=" in summary and "sense_0=" not in summary  # the paper's Sim_min, not every sense
    assert summary.rstrip().endswith(f"wrote {tmp_path / '1e3'}")
    (tmp_path / "1e3").rename(tmp_path / "2024")
    capsys.readouterr()
    main(["table", "2024"])
    assert "| backpack-micro (custom size) @30 |" in capsys.readouterr().out


def test_tasks_are_one_table(eval_models, monkeypatch):
    """The runner reads each task's data and scores it through tasks.TASKS: the data before the
    model (files-only sets first, so a missing --similarity_dir fails before any download), OWT
    after it (checked against the model); the results in the order asked. The Python API takes
    the flags as keywords or one EvalOptions."""
    import dataclasses

    from backpack_dist.eval import runner, tasks
    from backpack_dist.eval.options import EvalOptions

    calls = []
    for name, task in list(tasks.TASKS.items()):
        def load(value, limit, model, name=name):
            calls.append((name, value, limit, model is not None))
            return [name] * 2, {"source": "test", "examples": 2}

        def evaluate(m, data):
            return {"examples": len(data), "batch_size": m.scorer.batch_size, "senses": m.model.config.n_senses}

        monkeypatch.setitem(tasks.TASKS, name, dataclasses.replace(task, load=load, evaluate=evaluate))
    real = runner.load_pretrained
    monkeypatch.setattr(runner, "load_pretrained", lambda *args: calls.append("model") or real(*args))
    checkpoint = str(eval_models["backpack"])
    report = runner.evaluate(checkpoint, tasks="owt,blimp,lambada,similarity,wikitext", out=None, limit=3,
                             batch_size=5, lambada_path="L.jsonl", similarity_dir="S", progress=False)
    sets = list(tasks.GROUPS["similarity"])
    assert sets == ["simlex", "simverb", "rg65", "ws353"]
    assert calls == [(n, "S", 3, False) for n in sets] + [("lambada", "L.jsonl", 3, False),
                                                          ("wikitext", None, 3, False), ("blimp", None, 3, False),
                                                          "model", ("owt", None, 3, True)]
    assert list(report["results"]) == ["owt", "blimp", "lambada", *sets, "wikitext"] == list(report["seconds"])
    assert report["results"]["owt"] == {"examples": 2, "batch_size": 5, "senses": 4}
    assert report["data"]["blimp"] == {"source": "test", "examples": 2} and "written_to" not in report
    assert report["settings"]["limit"] == 3 and report["settings"]["batch_size"] == 5
    options = EvalOptions(checkpoint, tasks="rg65,simlex,rg65", out="", similarity_dir="S")
    assert list(runner.evaluate(options)["results"]) == ["rg65", "simlex"]
    with pytest.raises(TypeError, match="EvalOptions alone"):
        runner.evaluate(options, limit=2)
    with pytest.raises(ValueError, match="unknown task 'simlexx'"):
        runner.evaluate(checkpoint, tasks="simlexx", out=None)
    # The valid names, the default and --help come from the table; each task's data flag is a field.
    assert tasks.DEFAULT_TASKS == "owt,lambada,wikitext,blimp,similarity"
    control = ["debias", "topic", "edit"]  # shipped data, not in the default
    assert tasks.NAMES == ["owt", "lambada", "wikitext", "blimp", "similarity", "control", *sets, *control]
    help_text = tasks.tasks_help()
    fields = {f.name for f in dataclasses.fields(EvalOptions)}
    for task in tasks.TASKS.values():
        flag = "[shipped]" if task.data_flag is None else f"[--{task.data_flag}"
        assert task.data_flag in fields | {None} and f"  {task.name} " in help_text and flag in help_text
    assert [t.name for t in tasks.TASKS.values() if t.data_flag is None] == control


@pytest.mark.parametrize("argv, shown", [
    (["--help"], ["Score a checkpoint on the paper's benchmarks", "backpack_dist.eval table results/*.json",
                  "backpack_dist.eval install_lm_eval", "--checkpoint TEXT  (or the value alone, in order)",
                  "--out TEXT\n      The results JSON to write. (default: results.json)",
                  "--batch_size INT\n      Requests scored at once. (default: 16)",
                  "owt,lambada,wikitext,blimp,similarity", "--dtype bf16|fp32",
                  "\n    ws353     WordSim-353: Spearman's rho", "[--similarity_dir, required]"]),
    (["table", "--help"], ["Print results files as markdown", "--paths TEXT,...  (or the value alone, in order)"]),
    (["install_lm_eval", "-h"], ["Register the \"backpack\" model with lm-evaluation-harness"]),
])
def test_help_shows_the_flags_and_commands_only(capsys, argv, shown):
    """--help is generated from the command's options: every flag with its type, docstring and default."""
    main(argv)
    out = capsys.readouterr().out
    assert "FIRE_METADATA" not in out and "Optional" not in out
    for text in shown:
        assert text in out


@pytest.mark.parametrize("problem, args, message", [
    ("missing checkpoint", ["--checkpoint", "{tmp}/nope"], "does not exist"),
    # the data's flags are checked before the model loads ({tmp} holds no checkpoint)
    ("similarity without its folder", ["--checkpoint", "{tmp}", "--tasks", "lambada,simlex"], "pass --similarity_dir"),
    ("lambada path typo", ["--checkpoint", "{tmp}", "--lambada_path", "{tmp}/lambda.jsonl"], "lambda.jsonl"),
    ("unknown task", ["--tasks", "lambada,hellaswag"], "unknown task 'hellaswag'"),
    ("lambada format", ["--tasks", "lambada", "--lambada_path", "{wiki}"], "is not LAMBADA jsonl"),
    ("wikitext tokens file", ["--tasks", "wikitext", "--wikitext_path", "{wiki_tokens}"], "tokenized WikiText"),
    ("wikitext format", ["--tasks", "wikitext", "--wikitext_path", "{lambada}"], "not WikiText raw"),
    ("blimp fields", ["--tasks", "blimp", "--blimp_dir", "{bad_blimp}"], "sentence_good"),
    ("blimp names", ["--tasks", "blimp", "--blimp_dir", "{tmp}"], "not BLiMP sub-tasks"),
    ("similarity format", ["--tasks", "simlex", "--similarity_dir", "{bad_sim}"], "line 3 is not in the SimLex"),
    ("similarity missing", ["--tasks", "similarity", "--similarity_dir", "{decoy_sim}"],
     "no SimLex-999 file in {decoy_sim} or its subfolders (looked for SimLex-999.txt, SimLex999.txt, "
     "EN-SIMLEX-999.txt); add one"),
    ("similarity collection format", ["--tasks", "rg65", "--similarity_dir", "{tmp}/bad_collection"],
     "sets/EN-RG-65.txt line 2 is not in the RG-65 format: expected word1, word2 and a numeric score in column 3"),
    ("owt folder", ["--tasks", "owt", "--owt_val_dir", "{tmp}"], "is not data-prep output"),
    ("lambada folder", ["--lambada_path", "{tmp}"], "is a folder, not a file (pass the OpenAI lambada_test.jsonl)"),
    ("lambada encoding", ["--lambada_path", "{tmp}/latin1.jsonl"], "latin1.jsonl is not UTF-8 text (byte 29, line 2"),
    ("lambada trailing space", ["--lambada_path", "{tmp}/trailing.jsonl"],
     "trailing.jsonl line 2: the passage ends with whitespace (...'the cat sat on the mat '), which would become the "
     "target instead of the last word; remove the trailing whitespace"),
    ("wikitext encoding", ["--tasks", "wikitext", "--wikitext_path", "{tmp}/latin1.raw"],
     "latin1.raw is not UTF-8 text (byte 16, line 2"),
    ("blimp empty sentence", ["--tasks", "blimp", "--blimp_dir", "{empty_blimp}"],
     "adjunct_island.jsonl line 2 is not BLiMP jsonl: each line must be a JSON object with non-empty string"),
    ("similarity no variance", ["--tasks", "rg65", "--similarity_dir", "{flat_sim}"], "has no variance"),
    ("limit fraction", ["--limit", "1.5"], "--limit must be an integer, got '1.5'"),
    ("limit text", ["--limit", "abc"], "--limit must be an integer, got 'abc'"),
    ("batch size text", ["--batch_size", "abc"], "--batch_size must be an integer, got 'abc'"),
    ("unknown device", ["--device", "foo"], "unknown --device 'foo': use cpu, cuda or cuda:N"),
    ("missing gpu", ["--device", "cuda:99"], "--device cuda:99"),
    # --out is checked before the checkpoint loads (here it does not even exist)
    ("out folder", ["--checkpoint", "{tmp}/nope", "--out", "{tmp}"], "is a folder; pass a file name"),
    ("out under a file", ["--checkpoint", "{tmp}/nope", "--out", "{tmp}/notes.jsonl/r.json"],
     "notes.jsonl is not a folder; pass a path in a writable folder"),
    ("out in /proc", ["--checkpoint", "{tmp}/nope", "--out", "/proc/r.json"], "cannot create files in /proc"),
])
def test_bad_input_is_a_clear_error(eval_models, shared_data, tmp_path, capsys, problem, args, message):
    (tmp_path / "notes.jsonl").write_text("{}\n")
    bad_blimp = tmp_path / "bad_blimp"
    bad_blimp.mkdir()
    (bad_blimp / f"{SUBTASKS[0]}.jsonl").write_text(json.dumps({"good": "a", "bad": "b"}) + "\n")
    bad_sim = tmp_path / "bad_sim"
    bad_sim.mkdir()
    (bad_sim / "SimLex-999.txt").write_text("word1\tword2\tPOS\tSimLex999\nold\tnew\tA\t1.5\nsmart\tintelligent\n")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "a b"}\n{"text": "caf\xe9 au lait"}\n')
    (tmp_path / "trailing.jsonl").write_text('{"text": "a b"}\n{"text": "the cat sat on the mat "}\n')
    (tmp_path / "latin1.raw").write_bytes(b" = Title = \n caf\xe9 \n")
    empty_blimp = tmp_path / "empty_blimp"
    empty_blimp.mkdir()
    (empty_blimp / f"{SUBTASKS[0]}.jsonl").write_text(
        json.dumps({"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep."}) + "\n" +
        json.dumps({"sentence_good": "A dog barks.", "sentence_bad": " "}) + "\n")
    flat_sim = tmp_path / "flat_sim"
    flat_sim.mkdir()
    (flat_sim / "RG65.txt").write_text("cat;dog;3\ncar;bus;3\nsun;moon;3\n")
    decoy_sim = tmp_path / "decoy_sim"  # a subset of SimLex is not SimLex
    (decoy_sim / "sets").mkdir(parents=True)
    (decoy_sim / "sets" / "EN-SIMLEX-999-NOUN.txt").write_text("cat\tdog\t3\ncar\tbus\t2\nsun\tmoon\t1\n")
    (tmp_path / "bad_collection" / "sets").mkdir(parents=True)
    (tmp_path / "bad_collection" / "sets" / "EN-RG-65.txt").write_text("cat\tdog\t3\ncar bus\t2\nsun\tmoon\t1\n")
    paths = {"tmp": tmp_path, "wiki": shared_data / "wikitext2" / "wiki.test.raw",
             "wiki_tokens": shared_data / "wikitext2" / "wiki.test.tokens",
             "lambada": shared_data / "lambada_openai" / "lambada_test.jsonl", "bad_blimp": bad_blimp,
             "bad_sim": bad_sim, "empty_blimp": empty_blimp, "flat_sim": flat_sim, "decoy_sim": decoy_sim}
    message = message.format(**paths)
    argv = with_flags({"--checkpoint": str(eval_models["backpack"]), "--tasks": "lambada", "--limit": "2",
                       "--out": str(tmp_path / "out.json")}, [a.format(**paths) for a in args])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_results_with_nan_are_never_written(tmp_path):
    from backpack_dist.atomic import write_json

    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json(tmp_path / "r.json", {"rho": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_not_matching_its_config_is_a_clear_error(eval_models, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(eval_models["backpack"], broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["model"]["n_senses"] = 8
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(broken), "--tasks", "simlex", "--similarity_dir",
              str(write_similarity(tmp_path / "sim")), "--out", str(tmp_path / "out.json")])
    assert "does not match its config" in capsys.readouterr().err


@pytest.mark.slow
def test_sharded_run_over_two_processes_equals_one(eval_models, shared_data, tmp_path):
    """torchrun with two CPU processes (gloo): each scores half the requests; the results match."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    args = ["-m", "backpack_dist.eval", "--checkpoint", str(eval_models["backpack"]), "--tasks", "lambada,wikitext",
            "--limit", "3", "--lambada_path", str(shared_data / "lambada_openai" / "lambada_test.jsonl"),
            "--wikitext_path", str(shared_data / "wikitext2" / "wiki.test.raw"), "--progress", "False"]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    run = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", *args,
                          "--out", str(tmp_path / "two.json"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    main([a for a in args if a != "-m" and a != "backpack_dist.eval"] + ["--out", str(tmp_path / "one.json")])
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
    for task, metrics in one["results"].items():
        for name, value in metrics.items():
            assert math.isclose(two["results"][task][name], value, rel_tol=1e-6), (task, name)
