"""Small, dependency-free helpers for the ``semcache`` command line: tables, durations,
sizes, timestamps and JSON output (progress bars: ``semcache.cli.progress``)."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from semcache.errors import InvalidInputError

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"2w"``."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise InvalidInputError(
            f"duration must be a number of seconds or a number with s/m/h/d/w "
            f"(e.g. 3600, 90m, 7d); got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value):
        raise InvalidInputError(f"duration is too large: {text!r}")
    return value


def human_duration(seconds: float) -> str:
    """``"42s"``, ``"5m"``, ``"3h"``, ``"2d"``: the largest unit, rounded down."""
    s = abs(seconds)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - loop always returns


def iso_time(epoch: float | None) -> str | None:
    """Local ISO-8601 time to the second (None stays None)."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def expiry_text(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "never"
    if expires_at <= now:
        return f"expired {human_duration(now - expires_at)} ago"
    return f"in {human_duration(expires_at - now)}"


def one_line(text: str | None, width: int) -> str:
    """Collapse whitespace and cut to ``width`` characters with an ellipsis."""
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
          align: str | None = None) -> str:
    """A plain aligned text table. ``align`` has one ``l``/``r`` per column."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" * len(headers)

    def fmt(row: list[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w)
                 for c, w, a in zip(row, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    """``name: value`` lines with the names aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {'-' if v is None else v}" for k, v in pairs)


def print_json(value: Any, out: TextIO | None = None) -> None:
    """Valid JSON (no NaN) on stdout, one document."""
    out = out or sys.stdout
    out.write(json.dumps(value, ensure_ascii=False, indent=2, allow_nan=False, default=str))
    out.write("\n")
