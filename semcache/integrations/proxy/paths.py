"""Which upstream path a request under ``/v1/`` is forwarded to - and which it never is.

``--upstream http://host/tenant-a/v1`` maps ``/v1/X`` to ``http://host/tenant-a/v1/X`` and
nothing else: no request may reach a path outside that base. A request path is untrusted
text that an upstream (or a gateway in front of it) may decode once more, treat ``\\`` as
``/``, merge ``//`` or resolve ``..`` - so the check runs on every reading of it:

* the path is percent-decoded (strict UTF-8: overlong or invalid sequences are refused);
  an encoded slash (``%2F``, ``%2f``) counts as a slash, a backslash as a slash too;
* empty segments are dropped (an upstream that merges ``//`` must not see a different
  depth), ``.`` is dropped, ``..`` (also ``..;param``, as Java servers read it) climbs one
  segment; climbing above the base refuses the request;
* the same resolution runs again on each further decoding (``%252e%252e`` is ``%2e%2e``
  after one decoding and ``..`` after two), up to :data:`MAX_DECODINGS`; a path that still
  changes after that, or that holds a control character, is refused too.

What is forwarded is the resolved path of the first decoding, every segment percent-encoded
again (``%`` included): the upstream receives no dot segment, no backslash and no encoded
slash, only segments under the base.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote, unquote

from semcache.errors import InvalidInputError

#: Decodings of a path checked for an escape (one more change after these is refused).
MAX_DECODINGS = 4
#: Characters left as they are in a forwarded segment (RFC 3986 pchar without "%").
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"
_PREFIX = "/v1"


class UnsafePathError(InvalidInputError):
    """A request path that would leave the upstream base, or that cannot be read safely."""


def _decode(text: str) -> str:
    try:
        return unquote(text, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise UnsafePathError("the request path holds a percent-encoded sequence that is "
                              "not UTF-8") from None


def _segments(text: str) -> list[str]:
    """The segments of ``text`` (a decoded path below the base) with dot segments resolved;
    raises when a ``..`` climbs above the base."""
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise UnsafePathError("the request path holds a control character")
    kept: list[str] = []
    for segment in text.replace("\\", "/").split("/"):
        name = segment.split(";", 1)[0]
        if segment == "" or name == ".":
            continue
        if name == "..":
            if not kept:
                raise UnsafePathError("the request path leaves the upstream base "
                                      "(a '..' segment climbs above /v1/)")
            kept.pop()
            continue
        kept.append(segment)
    return kept


@functools.lru_cache(maxsize=256)  # a pure function of the path; clients repeat theirs
def upstream_path(raw_path: str) -> str:
    """The path below the upstream base that ``raw_path`` (a request path as received, still
    percent-encoded, starting with ``/v1``) is forwarded to: ``""`` or ``"/a/b"`` (with the
    request's trailing slash). Raises :class:`UnsafePathError` for whatever would leave the
    base under any decoding."""
    decoded = _decode(raw_path)
    if decoded != _PREFIX and not decoded.startswith(_PREFIX + "/"):
        raise UnsafePathError(f"the request path must start with {_PREFIX}/")
    below = decoded[len(_PREFIX):]
    forwarded = _segments(below)
    reading = below
    for _ in range(MAX_DECODINGS):
        again = _decode(reading)
        if again == reading:
            break
        reading = again
        _segments(reading)
    else:
        raise UnsafePathError(f"the request path is percent-encoded more than "
                              f"{MAX_DECODINGS} times over")
    if not forwarded:
        return "/" if below.endswith("/") else ""
    tail = "/" if below.replace("\\", "/").endswith("/") else ""
    return "/" + "/".join(quote(s, safe=_SEGMENT_SAFE) for s in forwarded) + tail


def request_raw_path(scope: MutableMapping[str, Any]) -> str:
    """The request path as the client sent it (ASGI ``raw_path``; re-encoded from ``path``
    on servers that do not give it)."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise UnsafePathError("the request path is not ASCII") from None
    return quote(str(scope.get("path", "")), safe="/" + _SEGMENT_SAFE)


__all__ = ["MAX_DECODINGS", "UnsafePathError", "request_raw_path", "upstream_path"]
