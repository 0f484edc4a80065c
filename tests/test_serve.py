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
from common import apt_install
from PIL import Image, ImageStat
from sense_checkpoints import make_checkpoint

from backpack_dist.pretrained import load_pretrained
from backpack_dist.senses.lookup import lookup_token
from backpack_dist.serve import make_server

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


def chromium_missing() -> list[str]:
    return [] if CHROMIUM.exists() else [str(CHROMIUM)]


@pytest.fixture(scope="module")
def browser():
    """(playwright's expect, the system's Chromium), installed with apt-get when missing, as the
    cluster tests install SLURM; the tests skip only when that install fails."""
    sync_api = pytest.importorskip("playwright.sync_api")
    # fonts-dejavu-core: glyphs for the page's text and its whitespace symbols on a bare machine
    why = apt_install(["chromium", "fonts-dejavu-core"], chromium_missing)
    if why:
        pytest.skip(f"no Chromium at {CHROMIUM}: {why}")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            yield sync_api.expect, chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def sense_page(browser, url):
    """(playwright's expect, a new page showing url once it has loaded the model's info), closed afterwards."""
    expect, chromium = browser
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.set_default_timeout(30_000)
        page.goto(url)
        expect(page.locator("#model")).to_contain_text("4 senses per word")
        yield expect, page
    finally:
        page.close()


def screenshot(page, path: Path) -> Path:
    """A full-page screenshot at path that shows something: a blank or one-colour image fails."""
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        spread = ImageStat.Stat(image.convert("L")).stddev[0]
        colours = len(image.convert("RGB").getcolors(1 << 24))
    assert spread > 10 and colours > 50, f"{path} looks blank: grey stddev {spread:.1f}, {colours} colours"
    return path


def shows_error(expect, page, message):
    """The page shows message as its one-line error."""
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(message)
    assert "\n" not in error.text_content()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_page_predicts_zeroes_a_sense_and_resets(browser, url, loaded, tmp_path):
    model, tokenizer, _ = loaded
    n_tokens = len(tokenizer.encode(SENTENCE))
    with sense_page(browser, url) as (expect, page):
        version = 0

        def predictions_after(*actions):
            nonlocal version
            for action in actions:
                action()
            version += 1
            page.wait_for_selector(f'#predictions[data-version="{version}"]')
            return page.eval_on_selector_all(
                "#predictions td.prob", "cells => cells.map(c => [c.dataset.token, Number(c.dataset.prob)])")

        def nurse_scaled(sense, factor):  # the model's top-10 probabilities with one sense of " nurse" scaled
            scales = torch.ones(1, n_tokens, 4)
            scales[0, 2, sense] = factor
            return model_top10(model, tokenizer, SENTENCE, scales)[1]

        # Type a sentence and predict: the top-10 table is the model's.
        page.fill("#sentence", SENTENCE)
        before = predictions_after(lambda: page.click("#predict"))
        top, probs = model_top10(model, tokenizer, SENTENCE)
        assert [tok for tok, _ in before] == [tokenizer.decode([t]) for t in top]
        assert [prob for _, prob in before] == pytest.approx(probs, rel=1e-5)
        expect(page.locator("#predictions td.word")).to_have_count(10)
        expect(page.locator("#tokens .token")).to_have_count(n_tokens)

        # Click a word: its senses, each with the look-up's top words.
        page.click(f'#tokens .token[data-id="{NURSE_ID}"]')
        expect(page.locator("#senses tbody tr")).to_have_count(4)
        expect(page.locator("#sense-word")).to_have_text('" nurse"')
        shown = page.eval_on_selector_all("#senses tbody tr", "rows => rows.map(r => "
                                          "[...r.querySelectorAll('span.w')].map(w => w.dataset.token))")
        assert shown == [[w["token"] for w in s["top"]] for s in lookup_token(model, tokenizer, NURSE_ID, 8)]

        # Zero one sense: the prediction changes to the model's with that sense zeroed.
        zeroed = predictions_after(lambda: page.click('#senses button.zero[data-sense="1"]'))
        assert [prob for _, prob in zeroed] == pytest.approx(nurse_scaled(1, 0), rel=1e-5)
        assert max(abs(a[1] - b[1]) for a, b in zip(before, zeroed, strict=True)) > 1e-3
        nurse_chip = page.locator(f'#tokens .token[data-id="{NURSE_ID}"]')
        expect(nurse_chip).to_have_class("token selected scaled")
        screenshot(page, tmp_path / "sense-page-zeroed.png")

        restored = predictions_after(lambda: page.click("#reset"))
        assert restored == before
        expect(page.locator('#senses input.scale[data-sense="1"]')).to_have_value("1")
        expect(nurse_chip).to_have_class("token selected")

        # A weight that is not a number: one readable line, nothing re-predicted; a number then applies.
        weight = page.locator('#senses input.scale[data-sense="2"]')
        weight.fill("abc")
        weight.press("Enter")
        shows_error(expect, page, 'the weight of sense 2 of " nurse" must be a number such as 0, 0.5 or 2, got "abc"')
        screenshot(page, tmp_path / "sense-page-bad-weight.png")
        expect(page.locator("#predictions")).to_have_attribute("data-version", str(version))
        halved = predictions_after(lambda: weight.fill("0.5"), lambda: weight.press("Enter"))
        assert [prob for _, prob in halved] == pytest.approx(nurse_scaled(2, 0.5), rel=1e-5)
        expect(page.locator("#error")).to_be_hidden()

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

        # An empty or over-long sentence: one readable line on the page; the server keeps serving.
        for name, text, message in [("empty", "", "the text is empty: give a sentence of at least one word"),
                                    ("long", "word " * 80, "; this model reads at most 64: shorten it")]:
            page.fill("#sentence", text)
            page.press("#sentence", "Enter")
            shows_error(expect, page, message)
            expect(page.locator("#prediction-block")).to_be_hidden()
            screenshot(page, tmp_path / f"sense-page-{name}.png")
            page.fill("#sentence", SENTENCE)
            assert predictions_after(lambda: page.click("#predict")) == before
            expect(page.locator("#error")).to_be_hidden()

        page.fill("#lookup-word", "science")
        page.click("#lookup")
        expect(page.locator("#lookup-result table caption")).to_contain_text('" science"')
        expect(page.locator("#lookup-result tr[data-sense]")).to_have_count(4)
        expect(page.locator("#error")).to_be_hidden()
        screenshot(page, tmp_path / "sense-page.png")


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_page_lookup_toggles_the_relative_view(browser, url, loaded, tmp_path):
    model, tokenizer, _ = loaded
    raw, relative = (lookup_token(model, tokenizer, SCIENCE_ID, 8, relative=r) for r in (False, True))
    with sense_page(browser, url) as (expect, page):

        def shown(relative_view):
            page.wait_for_selector(f'#lookup-result[data-relative="{str(relative_view).lower()}"] caption')
            return page.eval_on_selector_all(
                "#lookup-result tr[data-sense]", "rows => rows.map(r => [...r.querySelectorAll('span.w')]"
                ".map(w => w.dataset.token))")

        def words(senses):
            return [[w["token"] for w in s["top"]] for s in senses]

        page.fill("#lookup-word", "science")
        page.click("#lookup")
        assert shown(False) == words(raw)
        page.check("#relative")  # re-runs the look-up shown
        assert shown(True) == words(relative) != words(raw)
        expect(page.locator("#lookup-result th").last).to_have_text(
            "Top words, relative to the mean sense")
        screenshot(page, tmp_path / "sense-page-relative.png")
        page.uncheck("#relative")
        assert shown(False) == words(raw)
        expect(page.locator("#error")).to_be_hidden()


PRINCE_ID, VICTORY_ID = 19716, 5373  # " prince", " victory"


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_page_shows_whitespace_tokens_and_labels_every_column(browser, url, loaded, tmp_path):
    """A bare space, a newline or a blank line is a token like any other: every chip, table cell
    and heading shows it visibly, and every table column has a heading."""
    model, tokenizer, _ = loaded
    text = "When the  prince came in"  # the double space is a token of its own
    assert " " in [tokenizer.decode([t]) for t in tokenizer.encode(text)]
    top_words = {t: {w["token"] for s in lookup_token(model, tokenizer, t, 8) for w in s["top"]}
                 for t in (PRINCE_ID, VICTORY_ID)}
    assert "\n" in top_words[PRINCE_ID] and "\n\n" in top_words[VICTORY_ID]  # true of this checkpoint
    with sense_page(browser, url) as (expect, page):

        def shown():  # {token: what the page shows for it} over every chip, prediction and sense word
            pairs = page.eval_on_selector_all(
                "#tokens .token, #predictions td.word, #senses span.w, #lookup-result span.w",
                "els => els.map(e => [e.dataset.token, e.textContent])")
            assert all(shown.strip() for _, shown in pairs), f"blank tokens on the page: {pairs}"
            return dict(pairs)

        page.fill("#sentence", text)
        page.click("#predict")
        page.click(f'#tokens .token[data-id="{PRINCE_ID}"]')
        expect(page.locator("#sense-word")).to_have_text('" prince"')
        page.fill("#lookup-word", "victory")
        page.click("#lookup")
        expect(page.locator("#lookup-result caption")).to_have_text(f'token " victory" (id {VICTORY_ID})')
        screenshot(page, tmp_path / "sense-page-whitespace.png")
        tokens = shown()
        assert (tokens[" "], tokens["\n"], tokens["\n\n"], tokens[" prince"]) == ("␣", "↵", "↵↵", " prince")

        # Every column has a heading: each table's head row is as wide as its rows, and no heading is blank.
        tables = page.eval_on_selector_all("#predictions, #senses, #lookup-result table", """tables => tables.map(t => [
            [...t.tHead.rows[0].cells].map(c => c.textContent.trim()),
            [...t.tBodies[0].rows].map(r => r.cells.length)])""")
        assert len(tables) == 3
        for headings, widths in tables:
            assert all(headings) and set(widths) == {len(headings)}, (headings, widths)

        page.click('#tokens .token[data-token=" "]')  # the bare space has senses too
        expect(page.locator("#sense-word")).to_have_text('"␣"')
        expect(page.locator("#senses tbody tr")).to_have_count(4)
        expect(page.locator("#error")).to_be_hidden()


@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "error: --port must be in [0, 65535], got 99999"),
    (["--port", "abc"], "error: --port must be an integer, got 'abc'"),
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

    main(["--help"])
    out = capsys.readouterr().out
    assert "FIRE_METADATA" not in out and "Optional" not in out
    assert "Serve the sense page" in out
    assert "--port INT\n      The port to listen on (0 picks a free one). (default: 8000)" in out


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
