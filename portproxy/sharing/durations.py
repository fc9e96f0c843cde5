# -*- test-case-name: tests.test_sharing_pure -*-
"""Durations as people type them: C{3600}, C{90s}, C{30m}, C{2h}, C{30d}, C{1w}, C{1h30m}.

Used by C{--max-share-ttl} and by the C{share}/C{token} commands' C{--ttl}; pure, so the
option parser, the CLI and the API read a lifetime the same way.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_duration(text: str) -> float:
    """Seconds in C{text}: a plain number of seconds, or number+unit groups (s m h d w).

    Raises C{ValueError} with a message fit to follow the option's name.
    """
    value = text.strip().lower()
    if _NUMBER.fullmatch(value):
        seconds = float(value)
    else:
        parts = _PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(
                f"{text!r} is not a duration (seconds, or e.g. 90s, 30m, 2h, 30d, 1w)"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """C{seconds} in the largest unit that divides it (C{2592000} -> C{"30d"})."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        return f"{seconds:g}s"
    for unit in ("w", "d", "h", "m"):
        if whole % _UNITS[unit] == 0:
            return f"{whole // _UNITS[unit]}{unit}"
    return f"{whole}s"
