"""Coalescing claims of the PostgreSQL engine: leased rows in the schema's ``claims`` table
(unlogged), one autocommit statement each, never waiting (see docs/scale-out.md)."""

from __future__ import annotations

import os
import socket
import uuid

from semcache.store.postgres.pool import Connections
from semcache.store.postgres.queries import Queries


class Claims:
    """``Store.claim`` / ``Store.release`` over the claims table. Read-only caches cannot
    write claims: they always get True (no coalescing)."""

    def __init__(self, conns: Connections, q: Queries, readonly: bool) -> None:
        self._conns, self._q, self._readonly = conns, q, readonly
        self._holder: tuple[int, str] | None = None

    def holder(self) -> str:
        """Who holds claims taken by this process (host, pid and a random part)."""
        pid = os.getpid()
        if self._holder is None or self._holder[0] != pid:
            self._holder = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:12]}")
        return self._holder[1]

    def claim(self, key_hash: bytes, lease: float) -> bool:
        """A leased row for ``key_hash``; True when this process took it. A holder that
        dies frees the key after ``lease`` seconds of server time."""
        if self._readonly:
            return True
        q, params = self._q.claim, (key_hash, self.holder(), float(lease))
        return self._conns.run(lambda c: c.execute(q, params).fetchone()) is not None

    def release(self, key_hash: bytes) -> None:
        if self._readonly:
            return
        q, params = self._q.release, (key_hash, self.holder())
        self._conns.run(lambda c: c.execute(q, params))


__all__ = ["Claims"]
