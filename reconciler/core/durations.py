"""Durations as people type them: ``90m``, ``2h``, ``1h30m``, ``1d``, ``45s`` or plain seconds.

The one reader of durations: the local config (``status.heartbeat``), ``reconciler hold
--for``, ``status --stale-after``, and the repository's maintenance windows and rollout
pauses (``reconciler.core.windows.parse_duration``, which adds their bounds).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DURATION_HELP", "check_duration", "format_duration", "parse_duration"]

DURATION_HELP = "a duration such as 90m, 2h, 1h30m, 1d or a number of seconds"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | float, *, zero: bool = False) -> float:
    """Seconds in ``value``; raises ValueError saying what is expected.

    A number is seconds; a string is numbers each followed by a unit (s, m, h, d), or one
    plain number. ``zero`` allows 0 (a setting that 0 turns off); negative values never pass.
    """
    wrong = ValueError(f"{value!r} is not {DURATION_HELP}")
    if isinstance(value, bool):
        raise wrong
    if isinstance(value, (int, float)):
        total = float(value)
    else:
        total, number = 0.0, ""
        text = value.strip().lower().replace(" ", "")
        if not text:
            raise wrong
        try:
            for char in text:
                if char.isdigit() or char == ".":
                    number += char
                elif char in _UNITS and number:
                    total, number = total + float(number) * _UNITS[char], ""
                else:
                    raise wrong
            if number:
                if total:  # "1h30": a number without its unit after another
                    raise wrong
                total = float(number)
        except ValueError:  # "1.5.2h"
            raise wrong from None
    if total < 0 or (total == 0 and not zero) or total != total or total == float("inf"):
        raise ValueError(f"{value!r} is not {DURATION_HELP}"
                         + (" (0 turns it off)" if zero else " (more than 0)"))
    return total


def format_duration(seconds: float) -> str:
    """``5400`` -> ``1h30m``; ``0`` -> ``0s`` (for messages)."""
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def check_duration(field: str, value: object, error: Any) -> None:
    """A cerberus ``check_with`` rule: ``value`` is a duration (0 allowed: "off")."""
    try:
        parse_duration(value if isinstance(value, (str, int, float)) else str(value), zero=True)
    except ValueError as exc:
        error(field, str(exc))
