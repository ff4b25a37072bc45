"""How the PostgreSQL engine runs an HNSW search: pgvector's plain first batch, and its
iterative scan only when the partition / expiry filter leaves fewer than ``k`` rows of it
(measurements in docs/scale-out.md, round 3)."""

from __future__ import annotations

from typing import Any

import psycopg

from semcache.store.postgres.pool import Connections

#: After a search whose first batch came back short, this many searches of the same
#: partition go straight to the iterative scan.
ITERATE_FOR = 64


class HnswRows:
    """The HNSW search's rows, as with the iterative scan, most often without it.

    pgvector's iterative scan starts with the same batch as a plain scan (the
    ``ef_search`` nearest candidates the graph walk finds, in the same order) and
    walks on only when fewer than ``k`` of them pass the partition and expiry filter;
    but it keeps every candidate the walk passes over (a heap of a few thousand) for
    that, at ~10% of the search's time (docs/scale-out.md, round 3). So the pool's
    connections run the search without it (``hnsw.iterative_scan = off``): when the
    first batch gives ``k`` rows, they are the iterative scan's rows; when it gives
    fewer, the search runs again with the iterative scan, set for its own
    transaction (``SET LOCAL``: no session state, so also right behind a
    transaction-mode pooler, where the session default may be either). A partition
    whose batch came back short skips the plain batch for its next
    ``ITERATE_FOR`` searches (filtered partitions - a small one in a big table, many
    expired rows - pay one round trip, not two). With ``ef_search`` below ``k`` the
    plain batch can never hold ``k`` rows: the iterative scan straight away."""

    def __init__(self, conns: Connections, ef_search: int, mode: str) -> None:
        self._conns, self._ef_search, self._mode = conns, ef_search, mode
        #: Partition id -> searches left that skip the plain first batch.
        self._iterate: dict[int, int] = {}

    def searches_left(self, partition_id: int) -> int:
        """Searches of the partition that will still skip the plain first batch."""
        return self._iterate.get(partition_id, 0)

    def forget(self) -> None:
        """Drop what is remembered by partition id (ids of another incarnation)."""
        self._iterate.clear()

    def rows(self, sql: str, params: dict[str, Any], partition_id: int, k: int) -> list[tuple]:
        """The rows of the HNSW search statement ``sql`` for ``k`` candidates."""
        left = self._iterate.get(partition_id, 0)
        if left > 0:
            if left == 1:
                self._iterate.pop(partition_id, None)
            else:
                self._iterate[partition_id] = left - 1
        elif self._ef_search >= k:
            rows = self._conns.run(lambda c: c.execute(sql, params, binary=True).fetchall())
            if len(rows) >= k:
                return rows
            self._iterate[partition_id] = ITERATE_FOR
        mode = self._mode
        return self._conns.run(lambda c: _iterative_rows(c, mode, sql, params))


def _iterative_rows(conn: psycopg.Connection, mode: str, sql: str,
                    params: dict[str, Any]) -> list[tuple]:
    """``sql``'s rows with pgvector's iterative scan ``mode``, in a transaction of their
    own (one round trip: pipeline mode). A failure leaves the transaction open or
    aborted; the pool rolls it back when the connection comes back."""
    with conn.pipeline():
        conn.execute("BEGIN")
        conn.execute(f"SET LOCAL hnsw.iterative_scan = {mode}")
        cur = conn.execute(sql, params, binary=True)
        conn.execute("COMMIT")
    return cur.fetchall()


__all__ = ["ITERATE_FOR", "HnswRows"]
