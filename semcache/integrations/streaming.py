"""Split a cached answer into stream pieces for replaying it as SDK chunks.

A cached response requested with ``stream=True`` is replayed chunk by chunk so that
streaming UIs keep working. The pieces are cut at boundaries of the chosen unit
(``words``, ``sentences``, ``paragraphs`` or ``characters``), ``length`` units per
piece. Unlike naive ``str.split`` based chunkers, every character of the text -
including runs of spaces, tabs and newlines - lands in exactly one piece, so
``"".join(split_text(text, s, n)) == text`` always holds.
"""

from __future__ import annotations

import re
from typing import Any

from semcache.errors import ConfigurationError, InvalidTypeError

STRATEGIES: tuple[str, ...] = ("words", "sentences", "paragraphs", "characters")

# A unit ends right after the match of its terminator (the whitespace that follows a
# word / sentence / paragraph belongs to the unit before it, so pieces read naturally:
# "Hello, " "world." rather than "Hello," " world.").
_WORD_END = re.compile(r"\S+\s*")
# End of sentence: terminal punctuation (optionally followed by closing quotes or
# brackets) followed by whitespace or the end of the text; or a line break. The
# lookahead keeps "3.14" and "e.g.x" inside one sentence.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*(?:\s+|$)|\n\s*")
# End of paragraph: a blank line (possibly holding spaces) plus any whitespace after it.
_PARAGRAPH_END = re.compile(r"\n[ \t\r\f\v]*\n\s*")


def _unit_ends(text: str, strategy: str) -> list[int]:
    """Return the sorted end offsets of every unit; the last one is always len(text)."""
    if strategy == "characters":
        return list(range(1, len(text) + 1))
    pattern = {"words": _WORD_END, "sentences": _SENTENCE_END, "paragraphs": _PARAGRAPH_END}[
        strategy
    ]
    ends = [m.end() for m in pattern.finditer(text) if m.end() > 0]
    # Trailing text without a terminator is a unit of its own; leading whitespace before
    # the first word is folded into the first unit because units start where the
    # previous one ended.
    if not ends or ends[-1] != len(text):
        ends.append(len(text))
    # finditer never yields overlapping matches, but zero-length or repeated offsets
    # would create empty pieces.
    deduped: list[int] = []
    for end in ends:
        if not deduped or end > deduped[-1]:
            deduped.append(end)
    return deduped


def split_text(text: str, strategy: str = "words", length: int = 8) -> list[str]:
    """Split ``text`` into pieces of ``length`` units of ``strategy``.

    Args:
        text: the full answer. ``""`` yields ``[]``.
        strategy: ``"words"``, ``"sentences"``, ``"paragraphs"`` or ``"characters"``.
        length: how many units go into one piece (>= 1).

    Returns:
        Non-empty pieces whose concatenation is exactly ``text``.

    Raises:
        InvalidTypeError: ``text`` is not a str or ``length`` is not an int.
        ConfigurationError: unknown ``strategy`` or ``length`` < 1.
    """
    if not isinstance(text, str):
        raise InvalidTypeError(f"text must be a str, got {type(text).__name__}")
    check_stream_options(strategy, length)
    if not text:
        return []
    ends = _unit_ends(text, strategy)
    pieces: list[str] = []
    start = 0
    for i in range(length - 1, len(ends) + length - 1, length):
        end = ends[min(i, len(ends) - 1)]
        pieces.append(text[start:end])
        start = end
    return pieces


def check_stream_options(strategy: Any, length: Any) -> tuple[str, int]:
    """Validate a ``stream_chunk_strategy`` / ``stream_chunk_length`` pair (``wrap`` options,
    ``semcache serve`` flags, ``init_cache``); raises ConfigurationError naming the bad value."""
    if strategy not in STRATEGIES:
        raise ConfigurationError(
            f"stream_chunk_strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if isinstance(length, bool) or not isinstance(length, int):
        raise InvalidTypeError(f"stream_chunk_length must be an int >= 1; got {length!r}")
    if length < 1:
        raise ConfigurationError(f"stream_chunk_length must be an int >= 1; got {length!r}")
    return strategy, length


#: The process-wide replay settings (``init_cache(stream_chunk_strategy=...,
#: stream_chunk_length=...)``): words, 8 until it is called.
_REPLAY_DEFAULTS: tuple[str, int] = ("words", 8)


def set_replay_defaults(strategy: str, length: int) -> None:
    """Set the process-wide replay settings (checked with :func:`check_stream_options`)."""
    global _REPLAY_DEFAULTS
    _REPLAY_DEFAULTS = (strategy, length)


def replay_settings(strategy: str | None, length: int | None) -> tuple[str, int]:
    """The (strategy, length) a cached answer is replayed with: an integration's own
    settings (``wrap()`` options, ``semcache serve`` flags), else the process-wide ones
    (:func:`set_replay_defaults`)."""
    default_strategy, default_length = _REPLAY_DEFAULTS
    return strategy or default_strategy, length or default_length


__all__ = ["STRATEGIES", "check_stream_options", "replay_settings", "set_replay_defaults",
           "split_text"]
