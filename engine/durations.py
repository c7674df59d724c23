"""Durations as people write them in specs: ``200ms``, ``5s``, ``10m``, ``1h``, ``1h30m``, ``2d``.

Kept separate and pure because specs, CLI options and the filter language all parse them.
"""

from __future__ import annotations

import re

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d|w)")
MAX_SECONDS = 366 * 86400.0


def parse_duration(text: str | int | float) -> float:
    """Return seconds for ``text``; raise ValueError with a message that shows the accepted forms."""
    if isinstance(text, bool):
        raise ValueError("a duration must be like 200ms, 5s, 10m or 1h, not a boolean")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = text.strip().lower()
        pos, seconds = 0, 0.0
        if not s:
            raise ValueError("empty duration: write it like 200ms, 5s, 10m or 1h")
        while pos < len(s):
            m = _PART.match(s, pos)
            if not m:
                raise ValueError(f"bad duration {text!r}: write it like 200ms, 5s, 10m, 1h or 1h30m")
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"bad duration {text!r}: it must not be negative")
    if seconds > MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than a year; that is almost certainly a mistake")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest readable form: ``850ms``, ``3.2s``, ``4m10s``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f}us"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
