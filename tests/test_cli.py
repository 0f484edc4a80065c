"""The checked command lines: a mistyped flag or a stray argument stops every tool before it
does any work, with one line, exit status 2 and nothing written."""

import subprocess
import sys

import pytest
from common import REPO

from backpack_dist.cli import _command, leftover_problem
from backpack_dist.eval.runner import evaluate
from backpack_dist.export import export
from data_prep.__main__ import Commands


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
    (["m", "-l", "3"], "The argument '-l' is ambiguous"),
    (["--checkpoint", "m", "--tasks", "owt", "--limit", "3", "--noprogress"], None),
])
def test_eval_arguments(args, expected):
    problem = leftover_problem(evaluate, args)
    assert problem == expected if expected is None else problem.startswith(expected)


def test_subcommands_and_positional_arguments():
    text, args = _command(Commands, ["text", "--input", "a.txt", "b.txt", "--out_dir", "o"])
    assert leftover_problem(text, args).startswith("unexpected argument 'b.txt'")
    inspect_cmd, args = _command(Commands, ["inspect", "--samples", "3"])
    assert leftover_problem(inspect_cmd, args) == "missing out_dir: give it as --out_dir VALUE"
    assert leftover_problem(*_command(Commands, ["inspect", "OUT", "--samples", "3"])) is None
    typo = leftover_problem(export, ["RUN", "--out", "DIR", "--stpe", "4"])
    assert typo == "unknown flag --stpe; did you mean --step?"
    assert leftover_problem(export, ["RUN", "--out", "DIR", "--step", "4"]) is None


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
