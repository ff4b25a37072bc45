"""Loading many entries at once (imports, benchmarks): binary COPY, one transaction.

Row-by-row inserts also insert every row into the HNSW graph, which is what makes them
slow in bulk; ``PostgresStore.bulk_insert(entries, defer_index=True)`` drops the HNSW index,
loads (:func:`load`), and builds the index once at the end (:func:`rebuild_search_index`).
Searches keep working meanwhile (exact scans), only slower.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import psycopg
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

from semcache.errors import InvalidInputError
from semcache.store.base import NewEntry, entry_size
from semcache.store.postgres.adapters import PgVector
from semcache.store.postgres.conninfo import ConnInfo, translate
from semcache.store.postgres.pool import Connections
from semcache.store.postgres.queries import Queries
from semcache.store.postgres.txn import PgWriteTxn

log = logging.getLogger("semcache")

_BIT_OID = 1560
_COLUMNS = ("key_hash, namespace, partition_id, prompt, response, metadata, size, tokens, "
            "created_at, expires_at, ttl, code, vector, key_material")
_STAGE_COLUMNS = ("key_hash, namespace, scope, prompt, response, metadata, size, tokens, "
                  "created_at, expires_at, ttl, code, vector, accessed_at, hits, key_material")
#: COPY types of the staging columns (None: the vector column, pgvector's or bytea).
_STAGE_TYPES = ["bytea", "text", "text", "text", "bytea", "text", "int8", "int8", "float8",
                "float8", "float8", "bit", None, "float8", "int8", "bytea"]


class _BitBinaryDumper(Dumper):
    """A 32-byte code in ``bit``'s binary format (bit length, then the bytes)."""

    format = Format.BINARY
    oid = _BIT_OID

    def dump(self, obj: bytes) -> Buffer:
        return (8 * len(obj)).to_bytes(4, "big") + obj


def load(txn: PgWriteTxn, q: Queries, entries: Iterable[NewEntry], vector_oid: int | None, *,
         drop_index: bool) -> int:
    """Insert ``entries`` (streamed; keys unique among them, existing entries with the
    same keys are replaced) in ``txn`` (a transaction out of pipeline mode: COPY needs it);
    returns how many were written. ``drop_index``: drop the HNSW index first (the caller
    builds it again after COMMIT)."""
    txn.unbounded()  # an import may be any size
    conn = txn.conn
    conn.adapters.register_dumper(None, _BitBinaryDumper)
    vec_type = f"{q.ext}.vector" if q.ext else "bytea"
    conn.execute(f"CREATE TEMP TABLE semcache_stage (key_hash bytea, namespace text, "
                 "scope text, prompt text, response bytea, metadata text, size bigint, "
                 "tokens bigint, created_at float8, expires_at float8, ttl float8, "
                 f"code bit(256), vector {vec_type}, accessed_at float8, hits bigint, "
                 "key_material bytea) "
                 "ON COMMIT DROP")
    if drop_index:
        conn.execute(f"DROP INDEX IF EXISTS {q.schema}.entries_code_hnsw")
    n = _copy(conn, entries, vector_oid)
    if n == 0:
        return 0
    dup = conn.execute("SELECT key_hash FROM semcache_stage GROUP BY key_hash "
                       "HAVING count(*) > 1 LIMIT 1").fetchone()
    if dup is not None:
        raise InvalidInputError(f"bulk_insert needs distinct keys; key "
                                f"{bytes(dup[0]).hex()[:16]}... appears twice")
    conn.execute(f"INSERT INTO {q.t['partitions']} (namespace, scope) "
                 "SELECT DISTINCT namespace, scope FROM semcache_stage ORDER BY 1, 2 "
                 "ON CONFLICT (namespace, scope) DO NOTHING")
    txn.delete_summed_sql("e.key_hash IN (SELECT key_hash FROM semcache_stage)", ())
    cols = ", ".join("p.id" if c == "partition_id" else f"s.{c}"
                     for c in _COLUMNS.split(", "))
    rows = conn.execute(
        f"WITH ins AS (INSERT INTO {q.t['entries']} ({_COLUMNS}) SELECT {cols} "
        f"FROM semcache_stage s JOIN {q.t['partitions']} p "
        "ON p.namespace = s.namespace AND p.scope = s.scope "
        "RETURNING id, key_hash, partition_id, size), "
        f"u AS (INSERT INTO {q.t['entry_usage']} (entry_id, accessed_at, hits) "
        "SELECT ins.id, s.accessed_at, s.hits FROM ins "
        "JOIN semcache_stage s ON s.key_hash = ins.key_hash) "
        "SELECT partition_id, count(*), sum(size)::bigint FROM ins GROUP BY partition_id"
    ).fetchall()
    txn.added_summed(rows)
    return n


def _copy(conn: psycopg.Connection, entries: Iterable[NewEntry], vector_oid: int | None) -> int:
    """Stream ``entries`` into the staging table by binary COPY; returns the row count."""
    types = [conn.adapters.types[t].oid if t else (vector_oid or 0) for t in _STAGE_TYPES]
    if vector_oid is None:
        types[_STAGE_TYPES.index(None)] = conn.adapters.types["bytea"].oid
    n = 0
    with conn.cursor().copy(f"COPY semcache_stage ({_STAGE_COLUMNS}) FROM STDIN "
                            "(FORMAT BINARY)") as copy:
        copy.set_types(types)
        for e in entries:
            vector = None if e.vector is None else (
                PgVector(e.vector) if vector_oid is not None else e.vector)
            copy.write_row((
                e.key_hash, e.namespace, e.scope, e.prompt, e.response, e.metadata,
                entry_size(e), e.tokens, e.created_at, e.expires_at, e.ttl, e.code, vector,
                e.created_at if e.accessed_at is None else e.accessed_at, e.hits,
                e.key_material))
            n += 1
    return n


def rebuild_search_index(conns: Connections, q: Queries, info: ConnInfo, *,
                         maintenance_work_mem: str = "1GB") -> None:
    """(Re)build the HNSW index on ``entries.code`` in one pass (pgvector builds it much
    faster when the graph fits in ``maintenance_work_mem``)."""
    if q.ext is None:
        return
    if not maintenance_work_mem.replace("MB", "").replace("GB", "").isdigit():
        raise InvalidInputError(f"maintenance_work_mem like '512MB' or '1GB'; got "
                                f"{maintenance_work_mem!r}")
    try:
        with conns.maintenance() as conn:
            conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
            conn.execute(f"DROP INDEX IF EXISTS {q.schema}.entries_code_hnsw")
            conn.execute(f"CREATE INDEX entries_code_hnsw ON {q.t['entries']} USING hnsw "
                         f"(code {q.ext}.bit_hamming_ops)")
            conn.execute("RESET maintenance_work_mem")
            conn.execute(f"ANALYZE {q.t['entries']}")
    except psycopg.Error as exc:
        raise translate(exc, info) from None
    log.info("semcache: built the HNSW index of %s (schema %s)", info.location, info.schema)


__all__ = ["load", "rebuild_search_index"]
