"""Progress bars of the long commands (import, export, reembed, vacuum, calibrate).

tqdm draws them, on stderr only (``export -`` writes its data to stdout), and only when
stderr is a terminal: in logs, CI and pipes they would be noise (the commands' summary
lines say what was done), and ``--quiet`` turns them off on a terminal too.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm


def shows_progress(quiet: bool, stream: TextIO | None = None) -> bool:
    """True when a bar would be drawn: not ``quiet`` and the stream is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and callable(isatty) and bool(isatty())


def progress_bar(total: int | None, desc: str, *, quiet: bool, unit: str = "entries",
                 **options: Any) -> tqdm:
    """A bar on stderr (a disabled one, which draws nothing, unless
    :func:`shows_progress`). ``options`` go to tqdm (``unit_scale=True`` for bytes)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True,
                disable=not shows_progress(quiet), dynamic_ncols=True, mininterval=0.1,
                **options)


__all__ = ["progress_bar", "shows_progress"]
