"""The checked command lines: a mistyped flag, a stray argument or a bad value stops every tool
before it does any work, with one line, exit status 2 and nothing written; values are parsed by
the options' field types from the raw text."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest
from common import REPO

from backpack_dist import cli
from backpack_dist.eval.__main__ import EvalOptions
from backpack_dist.export import ExportOptions
from backpack_dist.train.config import TrainConfig
from data_prep.__main__ import COMMANDS


def problem(command_or_class, args):
    """The one-line message a command line gets, or None when it parses."""
    cls = command_or_class if dataclasses.is_dataclass(command_or_class) else cli.options_class(command_or_class)
    try:
        cli.parse_options(cls, args)
    except cli.UsageError as e:
        return str(e)
    return None


@pytest.mark.parametrize("args, expected", [
    (["--checkpoint", "m", "--limt", "5"], "unknown flag --limt; did you mean --limit?"),
    (["--checkpoint=m", "--taks=owt"], "unknown flag --taks; did you mean --tasks?"),
    (["--checkpoint", "m", "--tasks", "lambada", "wikitext"], "unexpected argument 'wikitext'"),
    (["m", "--tasks", "lambada,wikitext", "--limit", "3"], None),
    (["--checkpoint", "m", "--noprogress"], None),
    (["--checkpoint", "m", "--json"], "unknown flag --json; the flags are: --checkpoint, --tasks"),
    (["m", "--tasks", "owt", "--tasks=lambada"], "--tasks is given twice"),
    (["--checkpoint", "m", "-c", "n"], "--checkpoint is given twice"),
    (["m", "--progress", "--noprogress"], "--progress is given twice"),
    (["m", "-l", "3"], "-l could be --limit or --lambada_path; spell the flag out"),
    (["--checkpoint", "m", "--tasks", "owt", "--limit", "3", "--noprogress"], None),
    (["m", "--limit", "3.5"], "--limit must be an integer, got '3.5'"),
    (["m", "--progress", "maybe"], "--progress is a switch"),
    (["m", "--out"], "--out needs a value"),
])
def test_eval_arguments(args, expected):
    found = problem(EvalOptions, args)
    assert found == expected if expected is None else found.startswith(expected), found


def test_values_are_parsed_by_the_field_types_from_the_raw_text():
    cfg = cli.parse_options(TrainConfig, ["--run_dir", "3.10", "--data_dir", "a,b", "--lr", "1e-3", "--betas",
                                          "0.9,0.95", "--compile", "--seq_len", "None", "--warmup_steps", "5"])
    assert (cfg.run_dir, cfg.data_dir, cfg.lr, cfg.betas, cfg.compile) == ("3.10", "a,b", 1e-3, (0.9, 0.95), True)
    assert cfg.seq_len is None and cfg.warmup_steps == 5
    assert cli.parse_options(TrainConfig, ["--nocompile"]).compile is False
    assert problem(TrainConfig, ["--precision", "fp16"]) == "--precision 'fp16': choose one of auto, bf16, fp32"
    assert problem(TrainConfig, ["--keep", "0"]) == "--keep must be >= 1, got 0"  # __post_init__
    # the deepspeed launcher's --local_rank is ignored where the command says so
    assert cli.parse_options(TrainConfig, ["--local_rank=1"], ignore=("local_rank",)) == TrainConfig()


def test_subcommands_and_positional_arguments():
    table = COMMANDS
    assert problem(table["text"], ["--input", "a.txt", "b.txt", "--out_dir", "o"]).startswith(
        "unexpected argument 'b.txt'")
    assert problem(table["inspect"], ["--samples", "3"]) == "missing --out_dir: give it as --out_dir TEXT"
    assert problem(table["text"], ["a.txt", "--out_dir", "o", "--shard_index", "2"]) == (
        "--shard_index must be in [0, --num_shards), got 2 of 1")
    assert problem(table["inspect"], ["OUT", "--samples", "3"]) is None
    assert problem(ExportOptions, ["RUN", "--out", "DIR", "--stpe", "4"]) == "unknown flag --stpe; did you mean --step?"
    assert cli.parse_options(ExportOptions, ["RUN", "--out", "DIR", "--step", "4"]) == ExportOptions("RUN", "DIR", 4)


def test_help_is_generated_from_the_fields():
    from backpack_dist.train.__main__ import train

    assert cli.options_class(train) is TrainConfig
    text = cli.usage("python -m backpack_dist.train", train)
    assert "--eval_batches INT" in text and "the same samples on any number of processes" in text
    assert "--compile / --nocompile" in text and "--precision auto|bf16|fp32" in text and "Optional" not in text
    result = subprocess.run([sys.executable, "-m", "backpack_dist.eval", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--owt_val_dir" in result.stdout and "-o," not in result.stdout
    flags = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  --")]
    assert flags[0] == "--checkpoint" and flags.index("--device") < flags.index("--owt_val_dir")  # the table's last


@pytest.mark.parametrize("module, args", [
    ("data_prep", ["text", "--input", "{shared}/tinyshakespeare/input.txt", "--out_dir", "{out}", "--seqlen", "64"]),
    ("backpack_dist.export", ["{out}-run", "--out", "{out}", "--stpe", "4"]),
])
def test_a_typo_stops_the_tool_before_it_writes_anything(shared_data, tmp_path, module, args):
    out = tmp_path / "out"
    argv = [a.format(shared=shared_data, out=out) for a in args]
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "did you mean" in result.stderr
    assert not out.exists()


# --- --config FILE --------------------------------------------------------------------------------

def write(tmp_path, text: str, name: str = "run.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_config_file_sits_between_the_defaults_and_the_flags(tmp_path):
    path = write(tmp_path, 'model = "transformer-mini"\nlr = 1\nbetas = [0.9, 0.95]\nwarmup_steps = 50\n'
                           'compile = true\nprobe_words = [" a", " b"]\n')
    cfg = cli.parse_options(TrainConfig, ["--lr", "2e-3", "--config", path, "--nocompile"])
    assert cfg == dataclasses.replace(TrainConfig(), model="transformer-mini", lr=2e-3, betas=(0.9, 0.95),
                                      warmup_steps=50, compile=False, probe_words=(" a", " b"))
    assert isinstance(cli.parse_options(TrainConfig, [f"--config={path}"]).lr, float)  # the int 1 read as 1.0


@pytest.mark.parametrize("text, message", [
    ("lrr = 1", "run.toml: unknown key 'lrr'; did you mean lr?"),
    ('lr = "0.1"', 'run.toml: lr = "0.1": expected a number'),
    ("global_batch = 3.5", "run.toml: global_batch = 3.5: expected an integer"),
    ("compile = 1", "run.toml: compile = 1: expected true or false"),
    ('betas = [0.9, "x"]', 'run.toml: betas = [0.9, "x"]: expected an array of numbers'),
    ('precision = "fp16"', "run.toml: precision = \"fp16\": expected one of 'auto', 'bf16', 'fp32'"),
    ("lr = nan", "run.toml: lr = NaN: expected a number"),
    ("lr = [", "run.toml: invalid TOML: "),
    ("global_batch = 0", "--global_batch must be >= 1, got 0"),  # the options' own checks, as for a flag
])
def test_a_bad_config_file_is_one_line_naming_the_key_and_the_file(tmp_path, text, message):
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        cli.parse_options(TrainConfig, ["--config", write(tmp_path, text)])


def test_config_given_twice_or_missing_is_a_usage_error(tmp_path):
    path = write(tmp_path, "lr = 1e-3")
    with pytest.raises(cli.UsageError, match="--config is given twice"):
        cli.parse_options(TrainConfig, ["--config", path, "--config", path])
    with pytest.raises(cli.UsageError, match=re.escape(f"--config {tmp_path}/no.toml: no such file")):
        cli.parse_options(TrainConfig, ["--config", str(tmp_path / "no.toml")])


def test_every_command_takes_a_config_file_and_says_so_in_its_help(tmp_path):
    path = write(tmp_path, 'run = "RUN"\nout = "DIR"\nstep = 4\n')
    assert cli.parse_options(ExportOptions, ["--config", path, "--step", "5"]) == ExportOptions("RUN", "DIR", 5)
    from backpack_dist.train.__main__ import train
    assert "  --config FILE\n      Read flags from a TOML file" in cli.usage("train", train)


def test_the_shipped_recipes_are_valid_train_configs():
    from backpack_dist.model.config import MODEL_NAMES

    for model in MODEL_NAMES:
        cfg = cli.parse_options(TrainConfig, ["--config", str(REPO / "configs" / f"{model}.toml")])
        assert cfg.model == model and (cfg.global_batch, cfg.max_steps, cfg.lr) == (1024, 100_000, 6e-4)
    assert sorted(p.stem for p in (REPO / "configs").glob("*.toml")) == sorted(MODEL_NAMES)


def test_a_run_is_re_created_from_its_config_json(shakespeare_data, tmp_path, capsys):
    """A tiny run writes RUN/config.json; --config of it gives the same options as the run's own
    command line (what the run recorded beside them is skipped, and said)."""
    from train_helpers import run_training, tiny_run_args

    from backpack_dist.train.run_dir import RECORDED_KEYS

    run = tmp_path / "run"
    args = tiny_run_args("transformer-micro", shakespeare_data, run, steps=2, extra=["--probe_words", " a, b"])
    result = run_training(1, args)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = run / "config.json"
    assert set(RECORDED_KEYS) < set(json.loads(saved.read_text()))
    again = cli.parse_options(TrainConfig, ["--config", str(saved)], recorded=RECORDED_KEYS)
    assert again == cli.parse_options(TrainConfig, args) and again.warmup_steps == 2
    assert f"note: {saved}: not options, ignored: data, checkpoint_layout, cpu_threads" in capsys.readouterr().err
    assert cli.parse_options(TrainConfig, ["--config", str(saved), "--max_steps", "4"], recorded=RECORDED_KEYS) == \
        dataclasses.replace(again, max_steps=4)
    with pytest.raises(cli.UsageError, match="unknown key 'data'"):  # only a run's own command skips them
        cli.parse_options(TrainConfig, ["--config", str(saved)])


def test_a_config_file_with_a_typo_stops_the_tool_with_one_line(shared_data, tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path, f'input = "{shared_data}/tinyshakespeare/input.txt"\nout_dir = "{out}"\nseqlen = 64\n')
    result = subprocess.run([sys.executable, "-m", "data_prep", "text", "--config", path], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip() == f"data_prep: error: {path}: unknown key 'seqlen'; did you mean seq_len?"
