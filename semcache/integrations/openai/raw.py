"""What ``with_raw_response.create(...)`` returns on a cache hit.

A miss returns the SDK's own raw response (the API's status and headers), whose
``parse()`` gives the answer that was stored. A hit has no HTTP exchange behind it, so it
returns a :class:`CachedRawResponse`: the same reading surface (``parse()``,
``headers``, ``status_code``, ``content``, ``text``, ``json()``, ``request_id``,
``retries_taken``) with the headers the caching proxy would send
(``x-semcache: hit-exact | hit-semantic``, ``x-semcache-similarity``,
``x-semcache-entry``) and no ``http_response``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from semcache.integrations.info import CacheInfo, attach_info, info_headers


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only response headers."""

    def __init__(self, items: dict[str, str]) -> None:
        self._items = {name.lower(): value for name, value in items.items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class CachedRawResponse:
    """A cache hit returned by ``with_raw_response``: ``parse()`` is the cached answer."""

    status_code = 200
    http_response = None
    request_id = None
    retries_taken = 0
    is_closed = True
    elapsed = timedelta(0)

    def __init__(self, parsed: Any, info: CacheInfo) -> None:
        self._parsed = parsed
        self.headers = Headers({"content-type": "application/json", **info_headers(info)})
        attach_info(self, info)

    def parse(self, *, to: Any = None) -> Any:
        """The cached SDK object (``to=`` a pydantic type re-validates its JSON)."""
        if to is None:
            return self._parsed
        return to.model_validate(self.json())

    @property
    def text(self) -> str:
        """The answer as JSON text."""
        return json.dumps(self.json())

    @property
    def content(self) -> bytes:
        """The answer as JSON bytes."""
        return self.text.encode("utf-8")

    def json(self) -> Any:
        """The answer as JSON data."""
        return self._parsed.model_dump(mode="json")

    def read(self) -> bytes:
        """Same as :attr:`content`."""
        return self.content

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<CachedRawResponse {self.headers['x-semcache']} {type(self._parsed).__name__}>"


__all__ = ["CachedRawResponse", "Headers"]
