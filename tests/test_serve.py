"""The sense web page: its JSON API against the model, and the page driven in headless Chromium."""

import contextlib
import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from sense_checkpoints import make_checkpoint

from backpack_dist.pretrained import load_pretrained
from backpack_dist.senses.lookup import lookup_token
from backpack_dist.serve import make_server

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SENTENCE = "When the nurse came into the room,"
NURSE_ID = 15849  # " nurse" in GPT-2's vocabulary
SCIENCE_ID = 3783  # " science"


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("serve") / "backpack")


@pytest.fixture(scope="module")
def loaded(checkpoint_dir):
    model, tokenizer, info = load_pretrained(checkpoint_dir)
    return model, tokenizer, info


@pytest.fixture(scope="module")
def url(loaded):
    server = make_server(*loaded[:2], host="127.0.0.1", port=0, info=loaded[2], quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def call(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, data=data), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def model_top10(model, tokenizer, text, scales=None):
    ids = tokenizer.encode(text)
    with torch.no_grad():
        kwargs = {} if scales is None else {"sense_scales": scales}
        probs = model(torch.tensor([ids]), **kwargs)[0, -1].softmax(-1)
    values, top = probs.topk(10)
    return top.tolist(), values.tolist()


def test_predict_api_applies_token_scales_at_every_occurrence(url, loaded):
    model, tokenizer, _ = loaded
    text = SENTENCE + " the nurse"
    status, data = call(url, "/api/predict", {"text": text, "token_scales": {str(NURSE_ID): [1, 0, 2, 1]}})
    assert status == 200
    ids = [t["id"] for t in data["tokens"]]
    assert ids == tokenizer.encode(text) and ids.count(NURSE_ID) == 2
    scales = torch.ones(1, len(ids), 4)
    scales[0, [j for j, t in enumerate(ids) if t == NURSE_ID]] = torch.tensor([1.0, 0.0, 2.0, 1.0])
    top, probs = model_top10(model, tokenizer, text, scales)
    assert [p["id"] for p in data["predictions"]] == top
    assert [p["prob"] for p in data["predictions"]] == pytest.approx(probs, rel=1e-5)


def test_api_info_and_senses(url):
    assert call(url, "/api/info") == (200, {"model_name": "backpack-micro", "n_senses": 4, "max_tokens": 64})
    status, data = call(url, "/api/senses", {"word": "science", "top": 3})
    assert status == 200 and data["entries"][0]["token"] == " science"
    assert [len(s["top"]) for s in data["entries"][0]["senses"]] == [3] * 4


def top_ids(senses):
    return [[w["id"] for w in s["top"]] for s in senses]


def test_api_relative_lookup_is_the_senses_relative_lookup(url, loaded):
    model, tokenizer, _ = loaded
    status, data = call(url, "/api/senses", {"word": "science", "top": 5, "relative": True})
    assert status == 200 and [e["id"] for e in data["entries"]] == [SCIENCE_ID]
    relative = lookup_token(model, tokenizer, SCIENCE_ID, 5, relative=True)
    assert data["entries"][0]["senses"] == relative
    assert top_ids(relative) != top_ids(lookup_token(model, tokenizer, SCIENCE_ID, 5))  # the toggle shows something
    assert call(url, "/api/senses", {"id": SCIENCE_ID, "top": 5})[1]["entries"][0]["senses"] == lookup_token(
        model, tokenizer, SCIENCE_ID, 5)


@pytest.mark.parametrize("path, body, message", [
    ("/api/predict", {"text": "   "}, "the text is empty"),
    ("/api/predict", {"text": "word " * 80}, "this model reads at most 64"),
    ("/api/predict", {"text": SENTENCE, "token_scales": {"15849": [0, 1]}}, "must be 4 finite numbers"),
    ("/api/predict", {"text": SENTENCE, "top": 0}, "'top' must be an integer"),
    ("/api/senses", {"id": 10 ** 6}, "'id' must be an integer"),
    ("/api/senses", {}, "give 'word' (a word to look up) or 'id' (a token id from 0 to 50256)"),
    ("/api/senses", {"word": "science", "relative": "yes"}, "'relative' must be true or false, got 'yes'"),
    ("/api/senses", {"id": None}, "'id' must be an integer from 0 to 50256, got None"),
    ("/api/predict", {"text": SENTENCE, "token_scales": {" 15849": [1, 0, 1, 1]}},
     "'token_scales' key ' 15849' is not a token id: write ids as plain decimals such as \"15849\""),
    ("/api/predict", {"text": SENTENCE, "token_scales": {"15_849": [1, 0, 1, 1]}}, "key '15_849' is not a token id"),
    ("/api/predict", {"text": SENTENCE, "token_scales": {"+15849": [1, 0, 1, 1]}}, "key '+15849' is not a token id"),
    ("/api/nope", {}, "no API at /api/nope"),
    ("/api/predict", {"text": SENTENCE, "token_scales": {"99999999": [1, 0, 1, 1]}},
     "'token_scales' names token id 99999999, outside this model's vocabulary 0..50256"),
    ("/api/predict", {"text": SENTENCE, "token_scales": {"-1": [1, 0, 1, 1]}}, "names token id -1, outside"),
    ("/api/predict", {"text": "When the doctor came in", "token_scales": {str(NURSE_ID): [1, 0, 1, 1]}},
     "'token_scales' names token id 15849 (' nurse'), which is not in the text"),
    ("/api/predict", {"text": SENTENCE, "token_scales": {str(NURSE_ID): [1e38] * 4}},
     "the model's output is not finite (overflow or NaN) with the 'token_scales' of token 15849"),
])
def test_api_errors_are_named(url, path, body, message):
    status, data = call(url, path, body)
    assert status in (400, 404) and message in data["error"]


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_a_bad_content_length_is_answered_400(url, length):
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    head, _, body = reply.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.0 400") and f"bad Content-Length '{length}'" in json.loads(body)["error"]


@contextlib.contextmanager
def sense_page(url):
    """(playwright's expect, a page showing url) in the system's Chromium, closed afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url)
            yield sync_api.expect, page
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_page_predicts_zeroes_a_sense_and_resets(url, loaded):
    model, tokenizer, _ = loaded
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sense_page(url) as (expect, page):
        expect(page.locator("#model")).to_contain_text("4 senses per word")
        version = 0

        def predictions_after(action):
            nonlocal version
            action()
            version += 1
            page.wait_for_selector(f'#predictions[data-version="{version}"]')
            return page.eval_on_selector_all(
                "#predictions td.prob", "cells => cells.map(c => [c.dataset.token, Number(c.dataset.prob)])")

        page.fill("#sentence", SENTENCE)
        before = predictions_after(lambda: page.click("#predict"))
        top, probs = model_top10(model, tokenizer, SENTENCE)
        assert [tok for tok, _ in before] == [tokenizer.decode([t]) for t in top]
        assert [prob for _, prob in before] == pytest.approx(probs, rel=1e-5)

        page.click(f'#tokens .token[data-id="{NURSE_ID}"]')
        expect(page.locator("#senses tbody tr")).to_have_count(4)
        expect(page.locator("#sense-word")).to_have_text('" nurse"')
        zeroed = predictions_after(lambda: page.click('#senses button.zero[data-sense="1"]'))
        scales = torch.ones(1, len(tokenizer.encode(SENTENCE)), 4)
        scales[0, 2, 1] = 0
        top, probs = model_top10(model, tokenizer, SENTENCE, scales)
        assert [prob for _, prob in zeroed] == pytest.approx(probs, rel=1e-5)
        assert max(abs(a[1] - b[1]) for a, b in zip(before, zeroed, strict=True)) > 1e-3
        nurse_chip = page.locator(f'#tokens .token[data-id="{NURSE_ID}"]')
        expect(nurse_chip).to_have_class("token selected scaled")
        page.screenshot(path=str(artifacts / "sense-page-zeroed.png"), full_page=True)

        restored = predictions_after(lambda: page.click("#reset"))
        assert restored == before
        expect(page.locator('#senses input.scale[data-sense="1"]')).to_have_value("1")

        # Weights belong to one sentence: a new sentence starts unscaled (the API refuses
        # scales of tokens that are not in the text).
        predictions_after(lambda: page.click('#senses button.zero[data-sense="1"]'))
        page.fill("#sentence", "The doctor said that")
        other = predictions_after(lambda: page.click("#predict"))
        top, probs = model_top10(model, tokenizer, "The doctor said that")
        assert [prob for _, prob in other] == pytest.approx(probs, rel=1e-5)
        expect(page.locator("#error")).to_be_hidden()
        page.fill("#sentence", SENTENCE)
        assert predictions_after(lambda: page.click("#predict")) == before

        page.fill("#sentence", "")
        page.click("#predict")
        expect(page.locator("#error")).to_contain_text("the text is empty")
        page.fill("#sentence", "word " * 80)
        page.click("#predict")
        expect(page.locator("#error")).to_contain_text("this model reads at most 64")

        page.fill("#lookup-word", "science")
        page.click("#lookup")
        expect(page.locator("#lookup-result table caption")).to_contain_text('" science"')
        expect(page.locator("#lookup-result tr[data-sense]")).to_have_count(4)
        expect(page.locator("#error")).to_be_hidden()
        page.screenshot(path=str(artifacts / "sense-page.png"), full_page=True)
    assert (artifacts / "sense-page.png").stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_page_lookup_toggles_the_relative_view(url, loaded):
    model, tokenizer, _ = loaded
    raw, relative = (lookup_token(model, tokenizer, SCIENCE_ID, 8, relative=r) for r in (False, True))
    (REPO / "test-artifacts").mkdir(exist_ok=True)
    with sense_page(url) as (expect, page):

        def shown(relative_view):
            page.wait_for_selector(f'#lookup-result[data-relative="{str(relative_view).lower()}"] caption')
            return page.eval_on_selector_all(
                "#lookup-result tr[data-sense]", "rows => rows.map(r => [...r.querySelectorAll('span.w')]"
                ".map(w => w.textContent))")

        def words(senses):
            return [[w["token"] for w in s["top"]] for s in senses]

        page.fill("#lookup-word", "science")
        page.click("#lookup")
        assert shown(False) == words(raw)
        page.check("#relative")  # re-runs the look-up shown
        assert shown(True) == words(relative) != words(raw)
        expect(page.locator("#lookup-result th").last).to_have_text(
            "Top words, relative to the mean sense")
        page.screenshot(path=str(REPO / "test-artifacts" / "sense-page-relative.png"), full_page=True)
        page.uncheck("#relative")
        assert shown(False) == words(raw)
        expect(page.locator("#error")).to_be_hidden()


@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "error: --port must be a whole number from 0 to 65535, got 99999"),
    (["--port", "abc"], "error: --port must be a whole number from 0 to 65535, got 'abc'"),
    (["--device", "foo"], "error: unknown --device 'foo': use cpu, cuda or cuda:N"),
    (["--host", "192.0.2.1", "--port", "0"], "error: --host 192.0.2.1 is not an address of this machine"),
    (["--host", "nowhere.invalid", "--port", "0"], "error: cannot resolve --host nowhere.invalid"),
])
def test_serve_flags_are_checked_with_one_line(checkpoint_dir, capsys, args, message):
    from backpack_dist.serve.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(checkpoint_dir), *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(message) and err.count("\n") == 1


def test_help_shows_the_flags_only(capsys):
    from backpack_dist.serve.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().err  # fire writes its help to stderr
    assert exit_info.value.code == 0 and "FIRE_METADATA" not in out and "GROUP" not in out
    assert "Serve the sense page" in out and "--port=PORT\n        Type: 'int'\n        Default: 8000" in out


def test_a_busy_port_is_named(checkpoint_dir, capsys):
    from backpack_dist.serve.__main__ import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit):
            main(["--checkpoint", str(checkpoint_dir), "--port", str(port)])
    expected = f"error: port {port} is in use on 127.0.0.1: pick another with --port (0 picks a free one)\n"
    assert capsys.readouterr().err == expected


def test_serve_refuses_a_transformer_checkpoint(tmp_path):
    export = make_checkpoint(tmp_path / "transformer", family="transformer")
    result = subprocess.run([sys.executable, "-m", "backpack_dist.serve", "--checkpoint", str(export), "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: this checkpoint is a Transformer; sense tools need a Backpack "
                                     "(the sense page)")
