"""The sense web page: its JSON API against the model, and the page driven in headless Chromium."""

import json
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
from backpack_dist.serve import make_server

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SENTENCE = "When the nurse came into the room,"
NURSE_ID = 15849  # " nurse" in GPT-2's vocabulary


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    model, tokenizer, info = load_pretrained(make_checkpoint(tmp_path_factory.mktemp("serve") / "backpack"))
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


@pytest.mark.parametrize("path, body, message", [
    ("/api/predict", {"text": "   "}, "the text is empty"),
    ("/api/predict", {"text": "word " * 80}, "this model reads at most 64"),
    ("/api/predict", {"text": SENTENCE, "token_scales": {"15849": [0, 1]}}, "must be 4 finite numbers"),
    ("/api/predict", {"text": SENTENCE, "top": 0}, "'top' must be an integer"),
    ("/api/senses", {"id": 10 ** 6}, "'id' must be an integer"),
    ("/api/nope", {}, "no API at /api/nope"),
])
def test_api_errors_are_named(url, path, body, message):
    status, data = call(url, path, body)
    assert status in (400, 404) and message in data["error"]


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_page_predicts_zeroes_a_sense_and_resets(url, loaded):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    model, tokenizer, _ = loaded
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url)
            sync_api.expect(page.locator("#model")).to_contain_text("4 senses per word")
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
            sync_api.expect(page.locator("#senses tbody tr")).to_have_count(4)
            sync_api.expect(page.locator("#sense-word")).to_have_text('" nurse"')
            zeroed = predictions_after(lambda: page.click('#senses button.zero[data-sense="1"]'))
            scales = torch.ones(1, len(tokenizer.encode(SENTENCE)), 4)
            scales[0, 2, 1] = 0
            top, probs = model_top10(model, tokenizer, SENTENCE, scales)
            assert [prob for _, prob in zeroed] == pytest.approx(probs, rel=1e-5)
            assert max(abs(a[1] - b[1]) for a, b in zip(before, zeroed, strict=True)) > 1e-3
            nurse_chip = page.locator(f'#tokens .token[data-id="{NURSE_ID}"]')
            sync_api.expect(nurse_chip).to_have_class("token selected scaled")
            page.screenshot(path=str(artifacts / "sense-page-zeroed.png"), full_page=True)

            restored = predictions_after(lambda: page.click("#reset"))
            assert restored == before
            sync_api.expect(page.locator('#senses input.scale[data-sense="1"]')).to_have_value("1")

            page.fill("#sentence", "")
            page.click("#predict")
            sync_api.expect(page.locator("#error")).to_contain_text("the text is empty")
            page.fill("#sentence", "word " * 80)
            page.click("#predict")
            sync_api.expect(page.locator("#error")).to_contain_text("this model reads at most 64")

            page.fill("#lookup-word", "science")
            page.click("#lookup")
            sync_api.expect(page.locator("#lookup-result table caption")).to_contain_text('" science"')
            sync_api.expect(page.locator("#lookup-result tr[data-sense]")).to_have_count(4)
            sync_api.expect(page.locator("#error")).to_be_hidden()
            page.screenshot(path=str(artifacts / "sense-page.png"), full_page=True)
        finally:
            browser.close()
    assert (artifacts / "sense-page.png").stat().st_size > 10_000


def test_serve_refuses_a_transformer_checkpoint(tmp_path):
    export = make_checkpoint(tmp_path / "transformer", family="transformer")
    result = subprocess.run([sys.executable, "-m", "backpack_dist.serve", "--checkpoint", str(export), "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: this checkpoint is a Transformer; sense tools need a Backpack "
                                     "(the sense page)")
