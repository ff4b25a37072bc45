"""Loading many entries at once (imports, benchmarks): binary COPY, one transaction.

Row-by-row inserts also insert every row into the HNSW graph, which is what makes them
slow in bulk; :func:`bulk_insert` with ``defer_index=True`` drops the HNSW index, loads,
and builds the index once at the end (:func:`rebuild_search_index`). Searches keep working
meanwhile (exact scans), only slower.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import psycopg
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

from semcache.errors import InvalidInputError, ReadOnlyCacheError
from semcache.store.base import NewEntry
from semcache.store.postgres.adapters import PgVector
from semcache.store.postgres.conninfo import translate
from semcache.store.postgres.txn import entry_size

if TYPE_CHECKING:
    from semcache.store.postgres.store import PostgresStore

log = logging.getLogger("semcache")

_BIT_OID = 1560
_COLUMNS = ("key_hash, namespace, partition_id, prompt, response, metadata, size, tokens, "
            "created_at, expires_at, ttl, code, vector")
_STAGE_TYPES = ["bytea", "text", "int4", "text", "bytea", "text", "int8", "int8", "float8",
                "float8", "float8", "bit", None, "float8", "int8"]


class _BitBinaryDumper(Dumper):
    """A 32-byte code in ``bit``'s binary format (bit length, then the bytes)."""

    format = Format.BINARY
    oid = _BIT_OID

    def dump(self, obj: bytes) -> Buffer:
        return (8 * len(obj)).to_bytes(4, "big") + obj


def bulk_insert(store: PostgresStore, entries: Iterable[NewEntry], *,
                defer_index: bool = False) -> int:
    """Insert ``entries`` (keys unique among them; existing entries with the same keys are
    replaced) in one transaction; returns how many were written."""
    if store.readonly:
        raise ReadOnlyCacheError(f"cache {store.location} is opened read-only")
    batch = list(entries)
    if len({e.key_hash for e in batch}) != len(batch):
        raise InvalidInputError("bulk_insert needs distinct keys")
    if not batch:
        return 0
    q = store.queries
    dropped = defer_index and store.state.hnsw
    with store.write() as txn:
        conn = txn.conn
        conn.adapters.register_dumper(None, _BitBinaryDumper)
        vec_type = f"{q.ext}.vector" if q.ext else "bytea"
        conn.execute(f"CREATE TEMP TABLE semcache_stage (ord serial, key_hash bytea, "
                     "namespace text, partition_id int, prompt text, response bytea, "
                     "metadata text, size bigint, tokens bigint, created_at float8, "
                     f"expires_at float8, ttl float8, code bit(256), vector {vec_type}, "
                     "accessed_at float8, hits bigint) ON COMMIT DROP")
        if dropped:
            conn.execute(f"DROP INDEX IF EXISTS {q.schema}.entries_code_hnsw")
        # Partition ids first: no other statement may run on the connection during COPY.
        pids = {(e.namespace, e.scope): 0 for e in batch}
        for key in pids:
            pids[key] = txn.partition_id(*key)
        types = [t if t else vec_type for t in _STAGE_TYPES]
        with conn.cursor().copy(
                f"COPY semcache_stage ({_COLUMNS}, accessed_at, hits) FROM STDIN "
                "(FORMAT BINARY)") as copy:
            copy.set_types([conn.adapters.types[t].oid if "." not in t
                            else (store.vector_oid() or 0) for t in types])
            for e in batch:
                vector = None if e.vector is None else (PgVector(e.vector) if q.ext
                                                        else e.vector)
                copy.write_row((
                    e.key_hash, e.namespace, pids[(e.namespace, e.scope)], e.prompt,
                    e.response, e.metadata, entry_size(e), e.tokens, e.created_at,
                    e.expires_at, e.ttl, e.code, vector,
                    e.created_at if e.accessed_at is None else e.accessed_at, e.hits))
        txn.delete_summed_sql(
            "e.key_hash IN (SELECT key_hash FROM semcache_stage)", ())
        rows = conn.execute(
            f"WITH ins AS (INSERT INTO {q.t['entries']} ({_COLUMNS}) SELECT {_COLUMNS} "
            "FROM semcache_stage ORDER BY ord RETURNING id, key_hash, partition_id, size), "
            f"u AS (INSERT INTO {q.t['entry_usage']} (entry_id, accessed_at, hits) "
            "SELECT ins.id, s.accessed_at, s.hits FROM ins "
            "JOIN semcache_stage s ON s.key_hash = ins.key_hash) "
            "SELECT partition_id, count(*), sum(size)::bigint FROM ins GROUP BY partition_id"
        ).fetchall()
        txn.added_summed(rows)
    if dropped:
        rebuild_search_index(store)
    return len(batch)


def rebuild_search_index(store: PostgresStore, *, maintenance_work_mem: str = "1GB") -> None:
    """(Re)build the HNSW index on ``entries.code`` in one pass (pgvector builds it much
    faster when the graph fits in ``maintenance_work_mem``)."""
    q = store.queries
    if q.ext is None:
        return
    if not maintenance_work_mem.replace("MB", "").replace("GB", "").isdigit():
        raise InvalidInputError(f"maintenance_work_mem like '512MB' or '1GB'; got "
                                f"{maintenance_work_mem!r}")
    try:
        with store.connections.connection() as conn:
            conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
            conn.execute(f"DROP INDEX IF EXISTS {q.schema}.entries_code_hnsw")
            conn.execute(f"CREATE INDEX entries_code_hnsw ON {q.t['entries']} USING hnsw "
                         f"(code {q.ext}.bit_hamming_ops)")
            conn.execute("RESET maintenance_work_mem")
            conn.execute(f"ANALYZE {q.t['entries']}")
    except psycopg.Error as exc:
        raise translate(exc, store.info) from None
    store.mark_index(True)
    log.info("semcache: built the HNSW index of %s (schema %s)", store.location, store.schema)


__all__ = ["bulk_insert", "rebuild_search_index"]
