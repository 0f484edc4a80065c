"""Checks of command-line values shared by the eval, senses and serve commands: fire hands over
whatever the user typed ("abc", 1.5, True), so each number and device is checked here and a bad
one becomes a ValueError that names the flag. Kept free of heavy imports (torch is imported
only to check a device)."""

from __future__ import annotations

import math


def int_option(value, flag: str, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int within [low, high]; ValueError naming `flag` otherwise."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            pass
    if not isinstance(value, int) or isinstance(value, bool):  # fire reads a bare --flag as True
        raise ValueError(f"{flag} must be a whole number{_range(low, high)}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{flag} must be a whole number{_range(low, high)}, got {value}")
    return value


def float_option(value, flag: str, low: float | None = None) -> float:
    """`value` as a finite float >= low; ValueError naming `flag` otherwise."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if not isinstance(number, (int, float)) or isinstance(number, bool) or not math.isfinite(number):
        raise ValueError(f"{flag} must be a finite number{_range(low, None)}, got {value!r}")
    if low is not None and number < low:
        raise ValueError(f"{flag} must be a finite number{_range(low, None)}, got {number:g}")
    return float(number)


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" >= {low}"
    return ""


def resolve_device(device, flag: str = "--device") -> str:
    """The device to run on: the given one when this machine has it, else the GPU when there is
    one, else the CPU. ValueError for an unknown name or a GPU that is not there."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(str(device))
    except RuntimeError:
        raise ValueError(f"unknown {flag} {device!r}: use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{flag} {device} asks for a GPU but none is available here: use {flag} cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{flag} {device}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    elif parsed.type != "cpu":
        raise ValueError(f"unsupported {flag} {device!r}: use cpu, cuda or cuda:N")
    return str(parsed)
