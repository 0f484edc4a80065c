"""Hugging Face interop (python -m backpack_dist.convert): the authors' Backpack format and
transformers' GPT2LMHeadModel, each checked against a computation that is not ours: transformers'
own GPT-2, and a forward pass of the authors' format written here from their key layout with plain
torch ops (the authors' modeling code is not installed)."""

import base64
import json
import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from train_helpers import REPO, env, run_training, with_flags

from backpack_dist.convert.__main__ import main
from backpack_dist.convert.layout import fold_inverse_layer_scale
from backpack_dist.model import build_model
from backpack_dist.pretrained import load_pretrained, load_state, save_pretrained
from backpack_dist.tokenizer import load_tokenizer

D, LAYERS, HEADS, SENSES, POSITIONS = 32, 3, 2, 4, 24
GPT2_VOCAB, PADDED_VOCAB = 50257, 50264  # GPT-2's tokens; the authors' embedding rows
TEXT = "When the nurse came into the room, she"


def convert(*argv):
    """The CLI in this process: (exit status, stderr)."""
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        return e.code
    return 0


def tokens(text=TEXT):
    return torch.tensor([load_tokenizer("gpt2").encode(text)])


def logits(model, ids):
    with torch.no_grad():
        return model(ids)


# --- the authors' format, written and computed by hand -------------------------------------------

def authors_config(**changes):
    config = {"architectures": ["BackpackGPT2LMHeadModel"], "model_type": "backpack-gpt2",
              "auto_map": {"AutoConfig": "configuration_backpack_gpt2.BackpackGPT2Config",
                           "AutoModelForCausalLM": "modeling_backpack_gpt2.BackpackGPT2LMHeadModel"},
              "n_embd": D, "n_layer": LAYERS, "n_head": HEADS, "n_positions": POSITIONS, "vocab_size": PADDED_VOCAB,
              "num_senses": SENSES, "sense_intermediate_scale": 4, "scale_attn_by_inverse_layer_idx": True,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1, "embd_pdrop": 0.1,
              "attn_pdrop": 0.1}
    config.update(changes)
    return config


def authors_state_dict(seed=0, positions=POSITIONS):
    """Random weights in the authors' key layout: Conv1D weights (in, out), sense_weight_net an
    nn.Linear (out, in), GPT-2's mask buffers, the tied lm_head and the embedding aliases."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    def layer_norm(name):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = 1 + rnd(D), rnd(D)

    def conv1d(name, n_in, n_out):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = rnd(n_in, n_out), rnd(n_out)

    sd, g2 = {}, "backpack.gpt2_model."
    sd[g2 + "wte.weight"], sd[g2 + "wpe.weight"] = rnd(PADDED_VOCAB, D), rnd(positions, D)
    for i in range(LAYERS):
        block = f"{g2}h.{i}."
        layer_norm(block + "ln_1")
        conv1d(block + "attn.c_attn", D, 3 * D)
        conv1d(block + "attn.c_proj", D, D)
        layer_norm(block + "ln_2")
        conv1d(block + "mlp.c_fc", D, 4 * D)
        conv1d(block + "mlp.c_proj", 4 * D, D)
        sd[block + "attn.bias"] = torch.ones(1, 1, positions, positions, dtype=torch.bool).tril()
        sd[block + "attn.masked_bias"] = torch.tensor(-1e4)
    layer_norm(g2 + "ln_f")
    s = "backpack.sense_network."
    layer_norm(s + "ln")
    layer_norm(s + "block.ln_1")
    conv1d(s + "block.mlp.c_fc", D, 4 * D)
    conv1d(s + "block.mlp.c_proj", 4 * D, D)
    layer_norm(s + "block.ln_2")
    conv1d(s + "final_mlp.c_fc", D, 4 * D)
    conv1d(s + "final_mlp.c_proj", 4 * D, SENSES * D)
    sd["backpack.sense_weight_net.c_attn.weight"] = rnd(2 * D, D)
    sd["backpack.sense_weight_net.c_attn.bias"] = rnd(2 * D)
    sd["lm_head.weight"] = sd["backpack.word_embeddings.weight"] = sd[g2 + "wte.weight"]
    sd["backpack.position_embeddings.weight"] = sd[g2 + "wpe.weight"]
    return sd


def write_authors_folder(folder, state_dict=None, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(authors_state_dict() if state_dict is None else state_dict, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(authors_config() if config is None else config))
    return folder


def authors_logits(folder, ids):
    """BackpackGPT2LMHeadModel in eval mode, in float64, from the folder's config and state dict."""
    cfg = json.loads((folder / "config.json").read_text())
    sd = {k: v.double() for k, v in torch.load(folder / "pytorch_model.bin", weights_only=True).items()}
    d, n_head, k, eps = cfg["n_embd"], cfg["n_head"], cfg["num_senses"], cfg["layer_norm_epsilon"]
    T = ids.shape[1]

    def ln(x, name):
        return F.layer_norm(x, (d,), sd[name + ".weight"], sd[name + ".bias"], eps)

    def conv1d(x, name):
        return x @ sd[name + ".weight"] + sd[name + ".bias"]

    def mlp(x, name):
        return conv1d(F.gelu(conv1d(x, name + ".c_fc"), approximate="tanh"), name + ".c_proj")

    g2 = "backpack.gpt2_model."
    h = sd[g2 + "wte.weight"][ids] + sd[g2 + "wpe.weight"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg["n_layer"]):
        block = f"{g2}h.{i}."
        qkv = conv1d(ln(h, block + "ln_1"), block + "attn.c_attn").split(d, dim=-1)
        q, key, v = (t.unflatten(-1, (n_head, d // n_head)).transpose(1, 2) for t in qkv)
        w = q @ key.transpose(-1, -2) / math.sqrt(d // n_head)
        if cfg["scale_attn_by_inverse_layer_idx"]:
            w = w / (i + 1)
        attended = w.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        h = h + conv1d(attended.transpose(1, 2).flatten(2), block + "attn.c_proj")
        h = h + mlp(ln(h, block + "ln_2"), block + "mlp")
    h = ln(h, g2 + "ln_f")
    # sense_weight_net: first d outputs the queries, the next d the keys, k heads of d/k each
    qk = h @ sd["backpack.sense_weight_net.c_attn.weight"].T + sd["backpack.sense_weight_net.c_attn.bias"]
    q, key = qk.unflatten(-1, (2, k, d // k)).unbind(2)
    scores = torch.einsum("bthd,bshd->bhts", q, key) / math.sqrt(d // k)
    alpha = (scores + torch.full((T, T), -10000.0, dtype=scores.dtype).triu(1)).softmax(-1)
    # sense_network: ln, then a residual block without attention, then final_mlp to k*d
    s = "backpack.sense_network."
    residual = sd[g2 + "wte.weight"][ids]
    residual = ln(residual, s + "ln") + residual
    residual = mlp(ln(residual, s + "block.ln_1"), s + "block.mlp") + residual
    senses = mlp(ln(residual, s + "block.ln_2"), s + "final_mlp").unflatten(-1, (k, d)).transpose(1, 2)
    return (alpha @ senses).sum(dim=1) @ sd["lm_head.weight"].T  # no final LayerNorm, no 1/k


@pytest.fixture(scope="module")
def authors_dir(tmp_path_factory):
    return write_authors_folder(tmp_path_factory.mktemp("authors") / "backpack-gpt2")


def test_authors_backpack_converts_to_the_logits_of_their_format(authors_dir, tmp_path):
    assert convert("from-hf", authors_dir, "--out", tmp_path / "export") == 0
    model, tokenizer, info = load_pretrained(tmp_path / "export")
    assert model.config.is_backpack and model.config.scale_attn_by_inverse_layer_idx  # computed as trained
    assert model.config.padded_vocab_size == PADDED_VOCAB and model.config.vocab_size == GPT2_VOCAB
    assert info["source_format"] == "backpack-gpt2" and tokenizer.n_vocab == GPT2_VOCAB
    ids = tokens()
    reference = authors_logits(authors_dir, ids)[..., :GPT2_VOCAB]
    torch.testing.assert_close(logits(model, ids).double(), reference, rtol=1e-4, atol=1e-4)
    # The tools also read the folder itself, converting it in memory.
    direct, _, _ = load_pretrained(authors_dir)
    torch.testing.assert_close(logits(direct, ids), logits(model, ids), rtol=0, atol=0)


def test_sense_tools_read_the_authors_folder_directly(authors_dir, tmp_path, capsys):
    from backpack_dist.senses.__main__ import main as senses

    senses(["predict", "--checkpoint", str(authors_dir), "--text", TEXT, "--scale", "nurse:1=0", "--json"])
    report = json.loads(capsys.readouterr().out)
    ids = tokens()
    expected = authors_logits(authors_dir, ids)[0, -1, :GPT2_VOCAB].softmax(-1)
    top = report["before"][0]
    assert top["prob"] == pytest.approx(expected.max().item(), rel=1e-4)
    assert top["id"] == expected.argmax().item()


# --- our models out to transformers and back -----------------------------------------------------

def tiny_model(family, seed=0, **changes):
    torch.manual_seed(seed)
    sizes = dict(d_model=D, n_layer=LAYERS, n_head=HEADS, n_senses=SENSES, vocab_size=GPT2_VOCAB, seq_len=POSITIONS,
                 dropout=0.0)
    sizes.update(changes)
    model = build_model(f"{family}-micro", **sizes).eval()
    with torch.no_grad():  # LayerNorms away from 1/0 and sharp attention, so a swapped tensor or scale shows
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1, 0.2)
                module.bias.normal_(0, 0.2)
            elif isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.3 / math.sqrt(module.in_features) * 4)
                module.bias.normal_(0, 0.1)
    return model


def export(model, folder, tokenizer="gpt2"):
    return save_pretrained(model.state_dict(), model.config, folder, model_name=f"{model.config.family}-micro",
                           tokenizer=tokenizer, step=5)


@pytest.mark.parametrize("family", ["transformer", "backpack"])
def test_round_trip_through_hf_is_exact(family, tmp_path):
    model = tiny_model(family)
    assert convert("to-hf", export(model, tmp_path / "ours"), "--out", tmp_path / "hf") == 0
    assert convert("from-hf", tmp_path / "hf", "--out", tmp_path / "back") == 0
    state, config, info, _ = load_state(tmp_path / "back")
    assert info["model_name"] == f"{family}-micro" and info["step"] == 5
    # Conversion loses nothing: every tensor comes back bit for bit, the queries with the
    # 1/(layer+1) scaling folded in (the flag is off), a Transformer without the padded rows.
    expected = fold_inverse_layer_scale(model.state_dict(), model.config)
    if family == "transformer":
        expected["body.wte.weight"] = expected["body.wte.weight"][:GPT2_VOCAB]
        assert config.vocab_multiple == 1 and config.padded_vocab_size == GPT2_VOCAB
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert not config.scale_attn_by_inverse_layer_idx
    back, _, _ = load_pretrained(tmp_path / "back")
    ids = tokens()
    torch.testing.assert_close(logits(back, ids), logits(model, ids), rtol=1e-5, atol=1e-5)
    # ... and from there to HF again gives the same files' tensors: a fixed point.
    assert convert("to-hf", tmp_path / "back", "--out", tmp_path / "hf2") == 0
    weights = "pytorch_model.bin" if family == "backpack" else "model.safetensors"
    first, second = (torch.load(p / weights, weights_only=True) if family == "backpack" else load_file(p / weights)
                     for p in (tmp_path / "hf", tmp_path / "hf2"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_transformer_export_is_transformers_gpt2(attn, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_model("transformer")
    assert model.config.scale_attn_by_inverse_layer_idx  # today's default, which the export must keep
    assert convert("to-hf", export(model, tmp_path / "ours"), "--out", tmp_path / "hf") == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation=attn).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel" and hf.config._attn_implementation == attn
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = torch.tensor([hf_tokenizer(TEXT)["input_ids"]])
    assert torch.equal(ids, tokens())  # transformers' tokenizer from the folder is GPT-2's
    with torch.no_grad():
        theirs = hf(ids).logits
    assert theirs.shape[-1] == GPT2_VOCAB  # no padded rows that could get probability
    torch.testing.assert_close(theirs, logits(model, ids), rtol=1e-5, atol=1e-5)


def test_transformers_default_attention_ignores_the_inverse_layer_flag(tmp_path):
    """Why to-hf folds the scaling: with the flag alone, sdpa computes another function."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_embd=D, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS,
                        scale_attn_by_inverse_layer_idx=True, initializer_range=0.5)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2-scaled")
    ids = tokens()
    outputs = {}
    for attn in ("eager", "sdpa"):
        hf = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2-scaled", attn_implementation=attn).eval()
        with torch.no_grad():
            outputs[attn] = hf(ids).logits
    ours, _, _ = load_pretrained(tmp_path / "gpt2-scaled")
    assert ours.config.scale_attn_by_inverse_layer_idx
    torch.testing.assert_close(logits(ours, ids), outputs["eager"], rtol=1e-5, atol=1e-5)
    assert (outputs["sdpa"] - outputs["eager"]).abs().max() > 1e-3


def test_backpack_export_is_the_authors_format(authors_dir, tmp_path):
    model = tiny_model("backpack")
    assert convert("to-hf", export(model, tmp_path / "ours"), "--out", tmp_path / "hf") == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "backpack-gpt2" and config["architectures"] == ["BackpackGPT2LMHeadModel"]
    assert config["vocab_size"] == PADDED_VOCAB and config["num_senses"] == SENSES
    assert config["sense_intermediate_scale"] == 4 and config["scale_attn_by_inverse_layer_idx"] is False
    written = torch.load(tmp_path / "hf" / "pytorch_model.bin", weights_only=True)
    buffers = (".attn.bias", ".attn.masked_bias")
    layout = {k: v.shape for k, v in authors_state_dict().items() if not k.endswith(buffers)}
    assert {k: v.shape for k, v in written.items()} == layout  # the hand-written layout: keys and shapes
    ids = tokens()
    theirs = authors_logits(tmp_path / "hf", ids)
    torch.testing.assert_close(theirs[..., :GPT2_VOCAB], logits(model, ids).double(), rtol=1e-4, atol=1e-4)


def test_gpt2_folders_convert_with_or_without_the_transformer_prefix(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    hf = GPT2LMHeadModel(GPT2Config(n_embd=D, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS,
                                    initializer_range=0.3)).eval()
    hf.save_pretrained(tmp_path / "lm-head")
    # OpenAI's gpt2 on the Hub is a bare GPT2Model's tensors, mask buffers included.
    bare = tmp_path / "bare"
    bare.mkdir()
    body = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(LAYERS):
        body[f"h.{i}.attn.bias"] = torch.ones(1, 1, POSITIONS, POSITIONS).tril()
    save_file(body, bare / "model.safetensors")
    (bare / "config.json").write_text((tmp_path / "lm-head" / "config.json").read_text())
    ids = tokens()
    with torch.no_grad():
        reference = hf(ids).logits
    for folder in ("lm-head", "bare"):
        assert convert("from-hf", tmp_path / folder, "--out", tmp_path / f"{folder}-export") == 0
        ours, _, info = load_pretrained(tmp_path / f"{folder}-export")
        assert ours.config.family == "transformer" and not ours.config.scale_attn_by_inverse_layer_idx
        assert ours.config.padded_vocab_size == GPT2_VOCAB and info["model_name"] == "gpt2"
        torch.testing.assert_close(logits(ours, ids), reference, rtol=1e-5, atol=1e-5)


def byte_tokenizer(path):
    """A .tiktoken file of the 256 single bytes: a vocabulary that is not GPT-2's."""
    path.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    return path


def test_a_custom_tokenizer_travels_with_the_hf_folder(tmp_path):
    from transformers import AutoTokenizer

    spec = str(byte_tokenizer(tmp_path / "bytes.tiktoken"))
    model = tiny_model("backpack", vocab_size=257)
    assert convert("to-hf", export(model, tmp_path / "ours", tokenizer=spec), "--out", tmp_path / "hf") == 0
    text = "naïve  bats\n"
    ours_ids = load_tokenizer(spec).encode(text)
    assert AutoTokenizer.from_pretrained(tmp_path / "hf")(text)["input_ids"] == ours_ids
    back, tokenizer, _ = load_pretrained(tmp_path / "hf")
    assert tokenizer.encode(text) == ours_ids and back.config.vocab_size == 257
    ids = torch.tensor([ours_ids])
    torch.testing.assert_close(logits(back, ids), logits(model, ids), rtol=1e-5, atol=1e-5)


def test_old_exports_without_the_scaling_setting_load_as_trained(tmp_path):
    model = tiny_model("transformer")
    out = export(model, tmp_path / "old")
    info = json.loads((out / "config.json").read_text())
    del info["model"]["scale_attn_by_inverse_layer_idx"]  # as exports made before the setting existed
    (out / "config.json").write_text(json.dumps(info))
    loaded, _, _ = load_pretrained(out)
    assert loaded.config.scale_attn_by_inverse_layer_idx
    ids = tokens()
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=0, atol=0)


def test_hf_model_matches_our_logprobs_as_lm_eval_hf_reads_it(tmp_path):
    """lm_eval --model hf loads AutoModelForCausalLM and AutoTokenizer from DIR: both from our export."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_model("transformer")
    assert convert("to-hf", export(model, tmp_path / "ours"), "--out", tmp_path / "hf") == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    context, continuation = tok("When the nurse came into")["input_ids"], tok(" the room")["input_ids"]
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        theirs = hf(ids).logits.log_softmax(-1)[0]
        ours = model(ids).log_softmax(-1)[0]
    positions = range(len(context) - 1, ids.shape[1] - 1)
    assert sum(theirs[p, ids[0, p + 1]] for p in positions) == pytest.approx(
        sum(ours[p, ids[0, p + 1]] for p in positions).item(), abs=1e-4)
    assert tok.eos_token_id == 50256 and hf.config.eos_token_id == 50256


# --- wrong or partial folders: one line, exit status 2 ------------------------------------------

def without(sd, key):
    return {k: v for k, v in sd.items() if k != key}


BAD_FOLDERS = {
    "missing key": (lambda: without(authors_state_dict(), "backpack.sense_network.final_mlp.c_proj.weight"),
                    authors_config, "is missing 1 of the .* e.g. backpack.sense_network.final_mlp.c_proj.weight"),
    "other shape": (authors_state_dict, lambda: authors_config(num_senses=8),
                    r"backpack.sense_network.final_mlp.c_proj.weight has shape \(128, 128\) .* needs \(128, 256\)"),
    "unknown model_type": (authors_state_dict, lambda: authors_config(model_type="llama"),
                           "has model_type 'llama': only 'gpt2' .* and 'backpack-gpt2'"),
    "levanter": (authors_state_dict, lambda: {**authors_config(model_type=""), "auto_map": {
                 "AutoModelForCausalLM": "modeling_backpack_gpt2.BackpackGPT2LMHeadModel"}},
                 "Levanter's Backpack format .* divided by num_senses"),
    "extra weights": (lambda: {**authors_state_dict(), "backpack.extra.weight": torch.zeros(2)}, authors_config,
                      "holds 1 weights this model type does not have, e.g. extra.weight"),
    "untied head": (lambda: {**authors_state_dict(), "lm_head.weight": torch.zeros(PADDED_VOCAB, D)}, authors_config,
                    "lm_head.weight differs from backpack.gpt2_model.wte.weight"),
    "other activation": (authors_state_dict, lambda: authors_config(activation_function="relu"),
                         "activation_function 'relu'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_wrong_folders_are_one_line_errors(case, tmp_path, capsys):
    make_weights, make_config, message = BAD_FOLDERS[case]
    folder = write_authors_folder(tmp_path / "bad", make_weights(), make_config())
    assert convert("from-hf", folder, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=message):  # the tools that read the folder directly say the same
        load_pretrained(folder)


def test_no_weights_or_no_folder_are_one_line_errors(tmp_path, capsys):
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(authors_config()))
    assert convert("from-hf", folder, "--out", tmp_path / "out") == 2
    assert "has no weights" in capsys.readouterr().err
    assert convert("from-hf", tmp_path / "no" / "such", "--out", tmp_path / "out") == 2
    assert "does not exist, and is not a Hub id" in capsys.readouterr().err
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    assert convert("to-hf", export(tiny_model("transformer"), tmp_path / "ours"), "--out", user) == 2
    assert "is not an earlier to-hf output" in capsys.readouterr().err and (user / "notes.txt").exists()


def test_export_points_a_transformers_folder_to_convert(authors_dir, tmp_path, capsys):
    from backpack_dist import cli
    from backpack_dist.export import export

    with pytest.raises(SystemExit) as exit_info:
        cli.run(export, [str(authors_dir), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "is a transformers folder: the tools read it directly" in capsys.readouterr().err


def test_hub_id_offline_is_one_clear_line(tmp_path):
    environment = {**env(), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    result = subprocess.run([sys.executable, "-m", "backpack_dist.convert", "from-hf", "stanfordnlp/backpack-gpt2",
                             "--out", str(tmp_path / "out")], cwd=REPO, env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "stanfordnlp/backpack-gpt2 is no local folder and cannot be fetched from the Hugging Face Hub " \
        "(HF_HUB_OFFLINE is set, and it is not in the local Hugging Face cache)" in lines[0]


# --- train --init_from ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory, shared_data):
    from data_prep import prepare_and_merge

    out = tmp_path_factory.mktemp("data") / "shakespeare"
    prepare_and_merge([shared_data / "tinyshakespeare" / "input.txt"], out, seq_len=64, val_fraction=0.05)
    return out


@pytest.mark.slow  # a real training run, like test_train.py's
def test_train_init_from_starts_from_the_converted_weights(shakespeare, tmp_path):
    source = write_authors_folder(tmp_path / "authors", authors_state_dict(positions=64),
                                  authors_config(n_positions=64))
    flags = {"--model": "backpack-small", "--init_from": str(source), "--data_dir": str(shakespeare),
             "--run_dir": str(tmp_path / "run"), "--ds_config": str(REPO / "ds_configs" / "zero0.json"),
             "--global_batch": "4", "--micro_batch": "2", "--max_steps": "2", "--warmup_steps": "2",
             "--lr": "0",  # after two steps the run's weights must still be exactly the source's
             "--log_every": "1", "--eval_every": "2", "--eval_batches": "1", "--save_every": "2",
             "--wandb": "disabled", "--num_workers": "0"}
    result = run_training(1, with_flags(flags))
    assert result.returncode == 0, result.stderr[-3000:]
    state, config, info, _ = load_state(tmp_path / "run")
    expected, source_config, _, _ = load_state(source)
    assert config == source_config and info["step"] == 2 and info["model_name"] == "backpack-small"
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
    # Sizes that contradict the source are refused before anything runs.
    refused = run_training(1, with_flags(flags, ["--d_model", "64", "--run_dir", str(tmp_path / "run2")]))
    assert refused.returncode == 2 and "takes the model's sizes from there; drop --d_model" in refused.stderr


def test_init_from_refuses_another_family_or_tokenizer(authors_dir):
    from backpack_dist.train.config import ConfigError, TrainConfig
    from backpack_dist.train.init_from import initial_weights

    fingerprint = load_state(authors_dir)[2]["tokenizer_fingerprint"]
    with pytest.raises(ConfigError, match="is a backpack, --model transformer-small a transformer"):
        initial_weights(TrainConfig(model="transformer-small", init_from=str(authors_dir)),
                        {"tokenizer_fingerprint": fingerprint})
    with pytest.raises(ConfigError, match="another tokenizer than the data"):
        initial_weights(TrainConfig(model="backpack-small", init_from=str(authors_dir)),
                        {"tokenizer_fingerprint": "0" * 16})
    state, config = initial_weights(TrainConfig(model="backpack-micro", init_from=str(authors_dir), dropout=0.0),
                                    {"tokenizer_fingerprint": fingerprint})
    assert config.dropout == 0.0 and config.d_model == D and "sense_qk.weight" in state


def test_convert_without_a_command_is_an_error(capsys):
    assert convert() == 2
    assert "no command given" in capsys.readouterr().err
