"""The one exception type the CLI turns into a one-line error and a non-zero exit, and the checks
of option values that raise it (fire hands over whatever it parsed: `--seq_len abc` arrives as the
string "abc", a bare `--seq_len` as True)."""

from __future__ import annotations

import math
import numbers

from backpack_dist.cli import UsageError

PrepError = UsageError  # bad input or settings; the message names the problem and the fix


def as_int(flag: str, value, minimum: int, maximum: int | None = None) -> int:
    number = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    if number is None or number < minimum or (maximum is not None and number > maximum):
        limits = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise PrepError(f"--{flag} must be an integer {limits}, got {value!r}")
    return number


def as_float(flag: str, value) -> float:
    number = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number):
        raise PrepError(f"--{flag} must be a number, got {value!r}")
    return number


def as_bool(flag: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise PrepError(f"--{flag} is a switch: pass --{flag} (on) or --{flag} False, not {value!r}")
