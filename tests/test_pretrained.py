import json
import os

import pytest
import torch
from common import tiny_overrides

from backpack_dist.model import build_model
from backpack_dist.pretrained import load_pretrained, save_pretrained


def test_export_round_trip(tmp_path):
    model = build_model("backpack-micro", **tiny_overrides()).eval()
    out = save_pretrained(model.state_dict(), model.config, tmp_path / "export", model_name="backpack-micro", step=7)
    loaded, tokenizer, info = load_pretrained(out)
    assert info["step"] == 7 and tokenizer.eot_token == 50256
    x = torch.randint(0, 101, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_mismatched_or_missing_checkpoint_is_clear(tmp_path):
    model = build_model("transformer-micro", **tiny_overrides())
    out = save_pretrained(model.state_dict(), model.config, tmp_path / "export", model_name="transformer-micro")
    cfg = json.loads((out / "config.json").read_text())
    cfg["model"]["d_model"] = 64
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match its config"):
        load_pretrained(out)
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(tmp_path / "nope")


def test_export_replaces_only_an_earlier_export(tmp_path):
    model = build_model("transformer-micro", **tiny_overrides())
    user_folder = tmp_path / "notes"
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not an earlier export .*notes.txt"):
        save_pretrained(model.state_dict(), model.config, user_folder, model_name="transformer-micro")
    assert (user_folder / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        save_pretrained(model.state_dict(), model.config, tmp_path / "file", model_name="transformer-micro")

    out = save_pretrained(model.state_dict(), model.config, tmp_path / "export", model_name="transformer-micro", step=1)
    out = save_pretrained(model.state_dict(), model.config, out, model_name="transformer-micro", step=2)
    assert load_pretrained(out)[2]["step"] == 2
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # readable by the team, not mkdtemp's 0700
    for file in out.iterdir():  # safetensors writes its file 0600
        assert file.stat().st_mode & 0o777 == 0o666 & ~umask, file.name


def test_damaged_export_is_a_clear_error(tmp_path):
    model = build_model("transformer-micro", **tiny_overrides())
    out = save_pretrained(model.state_dict(), model.config, tmp_path / "export", model_name="transformer-micro")
    weights = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(weights[:100])
    with pytest.raises(ValueError, match="model.safetensors is damaged .*export the model again"):
        load_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["model"]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="has no 'model' settings"):
        load_pretrained(out)
    (out / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_pretrained(out)


def test_export_names_what_is_wrong_with_its_source(tmp_path):
    from backpack_dist.checkpoint import export_in_memory

    with pytest.raises(ValueError, match="nope does not exist"):
        export_in_memory(tmp_path / "nope")
    model = build_model("transformer-micro", **tiny_overrides())
    out = save_pretrained(model.state_dict(), model.config, tmp_path / "export", model_name="transformer-micro")
    with pytest.raises(ValueError, match="is already an export"):
        export_in_memory(out)
    with pytest.raises(ValueError, match="has no complete checkpoint"):
        export_in_memory(tmp_path)
