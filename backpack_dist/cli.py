"""Command lines through fire, with the argument check done before the command runs.

fire calls a command with the flags it understands and only afterwards complains about the rest,
so a typo such as `--limt 5` or a second path after `--input` would first run the whole job with
defaults. `run` asks fire's own parser which arguments it would leave over and refuses them with
one line before anything runs.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import sys
from pathlib import Path

import fire
from fire import decorators
from fire.core import FireError, _IsFlag, _MakeParseFn, _ParseKeywordArgs  # fire's own parser: the check agrees with it
from fire.inspectutils import GetFullArgSpec

HELP_FLAGS = {"-h", "--help", "--helpfull", "--"}


def nearest_existing(path) -> Path:
    """path itself or its nearest ancestor that exists: where an output path's checks start (a
    file there means no folder can be made on the way)."""
    path = Path(path).absolute()
    return next(p for p in (path, *path.parents) if p.exists())


def _command(component, argv: list[str]):
    """(the function fire will call, the arguments it gets), or (None, []) when fire will only
    show help or report a missing/unknown command itself."""
    if inspect.isfunction(component):
        return component, argv
    if not argv or argv[0].startswith("-"):
        return None, []
    if isinstance(component, dict):
        return component.get(argv[0]), argv[1:]
    if inspect.isclass(component):  # fire calls the method of an instance (our classes take no arguments)
        member = getattr(component(), argv[0], None)
        return (member if inspect.ismethod(member) else None), argv[1:]
    return None, []


def repeated_flag(args: list[str], params: list[str]) -> str | None:
    """The first parameter given twice (fire silently keeps the last value), read the way fire
    reads flags: --name VALUE, --name=VALUE, --name / --noname for booleans, -n for a unique initial."""
    seen = set()
    skip = False
    for index, argument in enumerate(args):
        if skip or not _IsFlag(argument):
            skip = False
            continue
        key = argument.lstrip("-").split("=", 1)[0].replace("-", "_")
        is_bool = "=" not in argument and (index + 1 == len(args) or _IsFlag(args[index + 1]))
        skip = "=" not in argument and not is_bool
        if key not in params and is_bool and key.startswith("no") and key[2:] in params:
            key = key[2:]
        elif key not in params and len(key) == 1:
            initials = [p for p in params if p[0] == key]
            key = initials[0] if len(initials) == 1 else key
        if key in params and key in seen:
            return key
        seen.add(key)
    return None


def leftover_problem(fn, args: list[str]) -> str | None:
    """A one-line description of the first argument fire would not use as meant, or None."""
    if any(a in HELP_FLAGS for a in args):
        return None
    spec = GetFullArgSpec(fn)
    try:
        given, unknown, bare = _ParseKeywordArgs(args, spec)
    except FireError as e:  # a one-letter flag that fits several parameters
        return f"{e}; spell the flag out"
    if unknown:
        flag = unknown[0].split("=", 1)[0]
        known = [p for p in spec.args + spec.kwonlyargs if p != "self"]
        close = difflib.get_close_matches(flag.lstrip("-").replace("-", "_"), known, n=1)
        hint = f"did you mean --{close[0]}?" if close else "the flags are: " + ", ".join(f"--{k}" for k in known)
        return f"unknown flag {flag}; {hint}"
    repeated = repeated_flag(args, spec.args + spec.kwonlyargs)
    if repeated:
        return f"--{repeated} is given twice (fire would keep the last); give it once, several values as a,b,c"
    try:
        _MakeParseFn(fn, decorators.GetMetadata(fn))(args)
    except FireError as e:  # a required argument is missing
        return f"missing {e.args[-1]}: give it as --{e.args[-1]} VALUE" if len(e.args) > 1 else str(e.args[0])
    # fire would hand bare words to parameters that have defaults (`--tasks a b` makes b the
    # output file): only parameters without a default take values without their flag.
    required = spec.args[: len(spec.args) - len(spec.defaults)]
    open_slots = len([a for a in required if a not in given and a != "self"])
    if spec.varargs or len(bare) <= open_slots:
        return None
    return (f"unexpected argument {bare[open_slots]!r}: pass every value after its --flag, and lists as a,b,c "
            "(no spaces)")


def help_view(fn):
    """fn's signature and docstring alone. SetParseFn (and functools.wraps, which copies it) leaves
    a FIRE_METADATA attribute on a function, and fire's help lists every public attribute as a
    command group ("GROUP | CHECKPOINT")."""
    return functools.wraps(fn, updated=())(lambda *args, **kwargs: fn(*args, **kwargs))


def run(component, argv: list[str] | None = None, name: str | None = None, prefix: str = "error",
        errors: tuple[type[BaseException], ...] = (), **fire_options):
    """fire.Fire(component) after checking the arguments; a bad one, or one of the tool's own
    `errors` (bad input it found), exits 2 with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not inspect.isfunction(component) and not argv:
        # Without a command fire prints the help and exits 0, which a script would take for success.
        names = component if isinstance(component, dict) else [n for n in vars(component) if not n.startswith("_")]
        print(f"{prefix}: no command given; usage: {name or ''} {{{','.join(names)}}} ... "
              f"(COMMAND --help lists its options)", file=sys.stderr)
        sys.exit(2)
    if HELP_FLAGS - {"--"} & set(argv):  # fire shows help and runs nothing
        if inspect.isfunction(component):
            component = help_view(component)
        elif isinstance(component, dict):
            component = {name: help_view(fn) if inspect.isfunction(fn) else fn for name, fn in component.items()}
    fn, args = _command(component, argv)
    problem = leftover_problem(fn, args) if fn is not None else None
    if problem:
        print(f"{prefix}: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        return fire.Fire(component, command=argv, name=name, **fire_options)
    except errors as e:
        if os.environ.get("RANK", "0") == "0":  # under a launcher every rank finds the same problem: say it once
            print(f"{prefix}: {e}", file=sys.stderr)
        sys.exit(2)
