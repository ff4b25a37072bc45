"""What a PostgreSQL client process remembers of the cache's partitions: their ids, both
ways, and their sizes for a few seconds.

Partitions are never deleted, so a ``(namespace, scope) -> id`` pair read once could hold
for the life of the process - except that an older backup of the schema restored in place
keeps the incarnation token and the partitions sequence as they were at the backup: the
ids of partitions created after it are given to other partitions again. Every statement
that uses a remembered id therefore also checks that it still names the same
``(namespace, scope)`` (:class:`~semcache.store.postgres.queries.Queries`), and a forced
incarnation check compares every remembered id with the table (:func:`stale_partitions`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

    from semcache.store.postgres.queries import Queries

#: How long a process trusts a partition size it read (sizes only steer the search plan).
SIZE_TTL = 5.0


class RememberedPartitions:
    """Partition ids learnt by this process, and recently read partition sizes."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._names: dict[int, tuple[str, str]] = {}
        self._sizes: dict[int, tuple[int, float]] = {}

    def get(self, key: tuple[str, str]) -> int | None:
        """The id of the ``(namespace, scope)`` partition, if learnt."""
        return self._ids.get(key)

    def names(self, partition_id: int) -> tuple[str, str] | None:
        """The ``(namespace, scope)`` this process learnt ``partition_id`` for."""
        return self._names.get(partition_id)

    def known(self) -> list[tuple[int, tuple[str, str]]]:
        """Every learnt ``(id, (namespace, scope))``."""
        return list(self._names.items())

    def learn(self, key: tuple[str, str], partition_id: int) -> None:
        self._ids[key] = partition_id
        self._names[partition_id] = key

    def forget(self) -> None:
        """Drop everything (another incarnation, or ids given out again)."""
        self._ids.clear()
        self._names.clear()
        self._sizes.clear()

    def read_state(self, conn: psycopg.Connection, q: Queries) -> tuple[dict[str, str],
                                                                         list[int]]:
        """The settings table, and the remembered ids that now name other partitions (or
        none): what a forced incarnation check reads, on one connection."""
        settings = {str(n): str(v) for n, v in conn.execute(q.settings).fetchall()}
        known = self.known()
        found = conn.execute(q.partition_names, ([pid for pid, _ in known],)).fetchall() \
            if known else []
        return settings, stale_partitions(known, found)

    def size(self, partition_id: int, read: Callable[[], int]) -> int:
        """The partition's size as ``read`` gives it, remembered for :data:`SIZE_TTL`."""
        now = time.monotonic()
        cached = self._sizes.get(partition_id)
        if cached is not None and now - cached[1] < SIZE_TTL:
            return cached[0]
        size = read()
        self._sizes[partition_id] = (size, now)
        return size


def stale_partitions(known: list[tuple[int, tuple[str, str]]], found: list[tuple]) -> list[int]:
    """Ids of ``known`` (``(id, (namespace, scope))``) that ``found`` (id, namespace, scope
    rows of the partitions table) no longer gives the same names, or not at all."""
    now = {int(r[0]): (str(r[1]), str(r[2])) for r in found}
    return sorted(pid for pid, names in known if now.get(pid) != names)


__all__ = ["SIZE_TTL", "RememberedPartitions", "stale_partitions"]
