"""Command lines: a command is a function of one options dataclass (a docstring line per field,
types and ranges checked in its __post_init__); `run` dispatches a command table.

fire reads the command line into raw strings (every value parsed as `str`), and the values are
parsed here by the fields' types, so `--name 3.10` stays "3.10" for a text field and `a,b` stays
text; `--help` is generated from the fields. `--config FILE` reads any of the fields from a TOML file
below the flags (config_file.py). Every check runs before the command does: a
mistyped flag, a stray argument or a bad value stops the tool with one line and exit 2. Bad
input found later is a UsageError, which ends the same way."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
import sys
import textwrap
import types
import typing
from pathlib import Path

import fire

from . import config_file

HELP_FLAGS = {"-h", "--help", "--helpfull"}


class UsageError(ValueError):
    """Bad input or settings, found before or while a command runs: the message names the
    problem and the fix; `run` prints it as one line and exits 2."""


def positional(default=dataclasses.MISSING, **kwargs):
    """A field that may also be given without its flag, in field order (`inspect OUT`); a list
    field takes every remaining bare value (`table a.json b.json`)."""
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return dataclasses.field(metadata={"positional": True}, **kwargs)


def check_range(options, name: str, low=None, high=None) -> None:
    """For __post_init__: the field `name` of `options` within [low, high] (None: no bound), or a
    UsageError naming its flag."""
    value = getattr(options, name)
    if value is None or ((low is None or value >= low) and (high is None or value <= high)):
        return
    bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
    raise UsageError(f"--{name} must be {bounds}, got {value}")


def nearest_existing(path) -> Path:
    """path itself or its nearest ancestor that exists: where an output path's checks start (a
    file there means no folder can be made on the way)."""
    path = Path(path).absolute()
    return next(p for p in (path, *path.parents) if p.exists())


# --- the options of a command -------------------------------------------------------------------

def options_class(command) -> type:
    """The options dataclass a command takes: the annotation of its one parameter."""
    params = list(inspect.signature(command).parameters.values())
    hints = typing.get_type_hints(command)
    if len(params) != 1 or not dataclasses.is_dataclass(hints.get(params[0].name)):
        raise TypeError(f"{command.__qualname__} must take one options dataclass")
    return hints[params[0].name]


def _source(klass) -> str | None:
    """A class's source; None for one made by dataclasses.make_dataclass (or a builtin)."""
    try:
        return inspect.getsource(klass)
    except (OSError, TypeError):
        return None


def field_docs(cls) -> dict[str, str]:
    """The docstring under each field (`name: int = 1` then `\"\"\"What it is.\"\"\"`), read from the
    source, or a field's metadata["help"]."""
    docs = {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if "help" in f.metadata}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        source = _source(klass)
        if source is None:  # made by dataclasses.make_dataclass: its fields carry metadata["help"]
            continue
        body = ast.parse(textwrap.dedent(source)).body[0].body
        for statement, following in zip(body, body[1:], strict=False):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return {f.name: docs[f.name] for f in dataclasses.fields(cls) if f.name in docs}  # in field order


def _fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _unwrap_optional(kind):
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(rest) == 1:
            return rest[0], len(rest) < len(typing.get_args(kind))
    return kind, False


def _type_name(kind) -> str:
    kind, _ = _unwrap_optional(kind)
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return "|".join(map(str, typing.get_args(kind)))
    if origin in (list, tuple):
        return f"{_type_name(typing.get_args(kind)[0])},..."
    return {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}.get(kind, "VALUE")


_INT = re.compile(r"[+-]?\d+")


def parse_value(name: str, raw: str, kind):
    """A raw command-line string as a value of the field's type; UsageError naming the flag."""
    kind, optional = _unwrap_optional(kind)
    if optional and raw.lower() == "none":
        return None
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        for choice in choices:
            if raw == str(choice):
                return choice
        raise UsageError(f"--{name} {raw!r}: choose one of {', '.join(map(str, choices))}")
    if origin in (list, tuple):
        item = typing.get_args(kind)[0]
        values = [parse_value(name, part.strip(), item) for part in raw.split(",") if part.strip()]
        return tuple(values) if origin is tuple else values
    if kind is bool:
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise UsageError(f"--{name} is a switch: pass --{name} (on), --no{name} or --{name} false, not {raw!r}")
    if kind is int:
        if _INT.fullmatch(raw.strip()):
            return int(raw)
        raise UsageError(f"--{name} must be an integer, got {raw!r}")
    if kind is float:
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
        raise UsageError(f"--{name} must be a number, got {raw!r}")
    return raw


# --- reading the command line --------------------------------------------------------------------

def _is_flag(token: str) -> bool:
    return token.startswith("--") or bool(re.fullmatch(r"-[A-Za-z]\w*", token))


def _flag_names(args: list[str]) -> list[tuple[str, bool]]:
    """(name as written, whether it came without a value) for each flag, read as fire reads them:
    --name VALUE, --name=VALUE, or a bare --name before another flag or at the end."""
    names = []
    for i, token in enumerate(args):
        if not _is_flag(token) or token == "--":
            continue
        name = token.lstrip("-").split("=", 1)[0].replace("-", "_")
        bare = "=" not in token and (i + 1 == len(args) or _is_flag(args[i + 1]))
        names.append((name, bare))
    return names


def _read_with_fire(args: list[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """(bare words, flags) as raw strings: fire's own reading of the command line."""
    got = {}

    @fire.decorators.SetParseFn(str)
    def collect(*words, **flags):
        got.update(words=words, flags=flags)

    fire.Fire(collect, command=args, name="")
    return got["words"], got["flags"]


def _resolve(name: str, fields: dict, ignore) -> str:
    """The field (of fields: name -> type) a flag names: its own name, --noNAME of a switch, or a
    one-letter initial."""
    if name in fields or name in ignore:
        return name
    if name.startswith("no") and name[2:] in fields and _unwrap_optional(fields[name[2:]])[0] is bool:
        return name[2:]
    if len(name) == 1:
        initials = [f for f in fields if f[0] == name]
        if len(initials) == 1:
            return initials[0]
        if initials:
            raise UsageError(f"-{name} could be {' or '.join('--' + f for f in initials)}; spell the flag out")
    close = difflib.get_close_matches(name, list(fields), n=1)
    hint = f"did you mean --{close[0]}?" if close else "the flags are: " + ", ".join(f"--{f}" for f in fields)
    raise UsageError(f"unknown flag --{name}; {hint}" if len(name) > 1 else f"unknown flag -{name}; {hint}")


def parse_options(cls, args: list[str], ignore=(), recorded=()):
    """An instance of the options dataclass `cls` from a command line (every check included), over
    the values of its --config file if it has one (config_file.py; `recorded`: keys the file may
    hold that are not options)."""
    kinds = typing.get_type_hints(cls)
    fields = {f.name: f for f in _fields(cls)}
    config_path, args = config_file.split_config_flag(args)
    seen, bare_switches = set(), set()
    for written, bare in _flag_names(args):
        name = _resolve(written, kinds, ignore)
        if name in seen:
            raise UsageError(f"--{name} is given twice; give it once, several values as a,b,c")
        seen.add(name)
        if bare:
            bare_switches.add(name)
    words, flags = _read_with_fire(args)
    values = {}
    for written, raw in flags.items():
        name = _resolve(written, kinds, ignore)
        if name in ignore:
            continue
        if name in bare_switches and _unwrap_optional(kinds[name])[0] is not bool:
            raise UsageError(f"--{name} needs a value: --{name} {_type_name(kinds[name])}")
        values[name] = parse_value(name, raw, kinds[name])
    words = list(words)
    for f in fields.values():
        if not f.metadata.get("positional") or not words:
            continue
        if typing.get_origin(_unwrap_optional(kinds[f.name])[0]) in (list, tuple):
            if f.name in values:
                break
            values[f.name] = [parse_value(f.name, w, _unwrap_optional(kinds[f.name])[0].__args__[0]) for w in words]
            words = []
        elif f.name not in values:
            values[f.name] = parse_value(f.name, words.pop(0), kinds[f.name])
    if words:
        raise UsageError(f"unexpected argument {words[0]!r}: pass every value after its --flag, and lists as "
                         "a,b,c (no spaces)")
    if config_path is not None:
        init_kinds = {name: kinds[name] for name in fields}
        values = {**config_file.file_values(config_path, init_kinds, recorded), **values}  # flags win
    missing = [f.name for f in fields.values() if f.name not in values and _default(f) is dataclasses.MISSING]
    if missing:
        raise UsageError(f"missing --{missing[0]}: give it as --{missing[0]} {_type_name(kinds[missing[0]])}")
    try:
        return cls(**values)
    except UsageError:
        raise
    except (TypeError, ValueError) as e:  # a check in the dataclass that raised another type
        raise UsageError(str(e)) from None


def usage(name: str, command) -> str:
    """--help: the command's docstring, then a line per flag (type, default, the field's docstring)."""
    cls = options_class(command)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    lines = [f"usage: {name} [--flag VALUE ...]", ""]
    about = inspect.getdoc(command) or inspect.getdoc(cls) or ""
    if about:
        lines += [about, ""]
    lines.append("flags:")
    # The command's own fields first, then those it inherits (e.g. the model overrides); fields
    # generated from a table (eval's data flags, dataclasses.make_dataclass) after the written ones.
    classes = sorted(cls.__mro__, key=lambda k: _source(k) is None)  # stable: MRO order within each group
    rank = {name: i for i, name in enumerate(n for k in classes for n in vars(k).get("__annotations__", {}))}
    for f in sorted(_fields(cls), key=lambda f: rank.get(f.name, 0)):
        default, kind = _default(f), hints[f.name]
        if _unwrap_optional(kind)[0] is bool:
            head = f"  --{f.name} / --no{f.name}"
        else:
            alone = "  (or the value alone, in order)" if f.metadata.get("positional") else ""
            head = f"  --{f.name} {_type_name(kind)}{alone}"
        shown = ("required" if default is dataclasses.MISSING else "" if default in ("", None)
                 else f"default: {_show(default)}")
        text = " ".join(part for part in (docs.get(f.name, ""), f"({shown})" if shown else "") if part)
        lines.append(head)
        if text:
            lines.append(textwrap.fill(text, width=100, initial_indent="      ", subsequent_indent="      "))
    lines += [f"  --{config_file.CONFIG_FLAG} FILE", textwrap.fill(config_file.CONFIG_HELP, width=100,
                                                                   initial_indent="      ", subsequent_indent="      ")]
    return "\n".join(lines)


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(none)"
    return str(value)


# --- running a command -----------------------------------------------------------------------

def _fail(prefix: str, message: str):
    if os.environ.get("RANK", "0") == "0":  # under a launcher every rank finds the same problem: say it once
        print(f"{prefix}: {message}", file=sys.stderr)
    sys.exit(2)


def run(commands, argv: list[str] | None = None, name: str | None = None, prefix: str = "error", ignore=(),
        errors: tuple[type[BaseException], ...] = (), recorded=()):
    """Run a command (a function of one options dataclass) or one of a table {name: command}. Bad input exits 2 with
    one line: a UsageError, or one of `errors`; a command's int return value is the exit status. `recorded`: keys a
    --config file may hold beside the options (a run's config.json), skipped with a note."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = name or Path(sys.argv[0]).name
    command, table = commands, commands if isinstance(commands, dict) else None
    if table is not None:
        if not argv or argv[0].startswith("-"):
            if argv and argv[0] in HELP_FLAGS:
                print(f"usage: {name} {{{','.join(table)}}} ...  (COMMAND --help lists its flags)\n")
                for key, fn in table.items():
                    print(f"  {key:16s} {(inspect.getdoc(fn) or '').splitlines()[0] if inspect.getdoc(fn) else ''}")
                return None
            _fail(prefix, f"no command given; usage: {name} {{{','.join(table)}}} ... (COMMAND --help lists "
                          "its flags)")
        if argv[0] not in table:
            _fail(prefix, f"unknown command {argv[0]!r}; choose one of {', '.join(table)}")
        command, name, argv = table[argv[0]], f"{name} {argv[0]}", argv[1:]
    if HELP_FLAGS & set(argv):
        print(usage(name, command))
        return None
    try:
        options = parse_options(options_class(command), argv, ignore, recorded)
        status = command(options)
    except (UsageError, *errors) as e:
        _fail(prefix, str(e))
    if isinstance(status, int) and not isinstance(status, bool):
        sys.exit(status)
    return status
