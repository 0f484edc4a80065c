"""`--config FILE`: a command's fields read from a TOML file (or a run's own JSON config.json),
below the command line (defaults < file < flags). A file's values are typed (TOML's ints, floats,
bools, arrays, strings; JSON's null for an optional field), so they are checked against each
field's type here and then go through the same parsing as a flag's text (choices, finite numbers);
an unknown key or a wrong type is one line naming the key and the file."""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
import typing
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10 (pyproject allows it): JSON files only
    tomllib = None

from . import cli  # the module: cli imports this one too

CONFIG_FLAG = "config"
CONFIG_HELP = ("Read flags from a TOML file (key = value per field, e.g. configs/backpack-small.toml) or a run's "
               "RUN/config.json; flags given on the command line win.")


def split_config_flag(args: list[str]) -> tuple[str | None, list[str]]:
    """(the --config path or None, the other arguments)."""
    path, rest, i = None, [], 0
    while i < len(args):
        token = args[i]
        if token == f"--{CONFIG_FLAG}" or token.startswith(f"--{CONFIG_FLAG}="):
            if path is not None:
                raise cli.UsageError(f"--{CONFIG_FLAG} is given twice; give one file (flags on the command line "
                                 "override its values)")
            if "=" in token:
                path = token.split("=", 1)[1]
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                path, i = args[i + 1], i + 1
            else:
                raise cli.UsageError(f"--{CONFIG_FLAG} needs a value: --{CONFIG_FLAG} FILE.toml")
        else:
            rest.append(token)
        i += 1
    return path, rest


def read_file(path: str) -> dict:
    """The file's table: TOML, or JSON for a .json file (a run's config.json)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise cli.UsageError(f"--{CONFIG_FLAG} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise cli.UsageError(f"--{CONFIG_FLAG} {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if tomllib is None and not path.endswith(".json"):
        raise cli.UsageError(f"--{CONFIG_FLAG} {path}: TOML needs Python 3.11 or later (tomllib); use a .json file")
    try:
        table = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except json.JSONDecodeError as e:
        where = f"(at line {e.lineno}, column {e.colno})"
        raise cli.UsageError(f"--{CONFIG_FLAG} {path}: invalid JSON: {e.msg} {where}") from None
    except ValueError as e:  # tomllib.TOMLDecodeError; its message ends "(at line L, column C)"
        raise cli.UsageError(f"--{CONFIG_FLAG} {path}: invalid TOML: {e}") from None
    if not isinstance(table, dict):
        raise cli.UsageError(f"--{CONFIG_FLAG} {path}: expected a table of key = value lines")
    return table


def _expected(kind) -> str:
    kind, _ = cli._unwrap_optional(kind)
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(kind))
    if origin in (list, tuple):
        item = cli._unwrap_optional(typing.get_args(kind)[0])[0]
        plural = {int: "integers", float: "numbers", bool: "true/false", str: "strings"}
        return "an array of " + plural.get(item, "values")
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, "a value")


def _typed_ok(value, kind) -> bool:
    """Whether a file's typed value has the field's type (an int is a number; a bool is not an int)."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, str)


def parse_file_value(name: str, value, kind, path: str):
    """A file's value as the field's type, parsed as its flag would be; UsageError naming key and file."""
    bare, optional = cli._unwrap_optional(kind)
    if value is None and optional:
        return None
    origin = typing.get_origin(bare)
    wrong = cli.UsageError(f"{path}: {name} = {json.dumps(value)}: expected {_expected(kind)}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise wrong
        item = typing.get_args(bare)[0]
        if not all(_typed_ok(v, cli._unwrap_optional(item)[0]) for v in value):
            raise wrong
        items = [parse_file_value(name, v, item, path) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value not in typing.get_args(bare) or isinstance(value, bool):
            raise wrong
    elif not _typed_ok(value, bare):
        raise wrong
    try:
        return cli.parse_value(name, value if isinstance(value, str) else str(value).lower() if isinstance(value, bool)
                           else repr(value), bare)
    except cli.UsageError as e:
        raise cli.UsageError(f"{path}: {name} = {json.dumps(value)}: {e}") from None


def file_values(path: str, kinds: dict, recorded=()) -> dict:
    """{field: value} from the file at `path` for fields of types `kinds`. Keys in `recorded` are
    what a run writes beside its options (config.json's data identity, ...): skipped, with a note."""
    values, skipped = {}, []
    for key, value in read_file(path).items():
        if key in recorded:
            skipped.append(key)
            continue
        if key not in kinds:
            close = difflib.get_close_matches(key, list(kinds), n=1)
            hint = f"did you mean {close[0]}?" if close else "the keys are the flags' names: " + ", ".join(kinds)
            raise cli.UsageError(f"{path}: unknown key {key!r}; {hint}")
        values[key] = parse_file_value(key, value, kinds[key], path)
    if skipped and os.environ.get("RANK", "0") == "0":
        print(f"note: {path}: not options, ignored: {', '.join(skipped)} (what the run recorded beside them)",
              file=sys.stderr)
    return values
