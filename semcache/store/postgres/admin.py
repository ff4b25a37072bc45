"""Integrity report and repair of the PostgreSQL engine (``Store.check`` and
``Store.vacuum`` of :class:`~semcache.store.postgres.store.PostgresStore`): whole-table
reads and rewrites, never on a lookup path. Functions of the pool, the statements and the
schema they act on.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from semcache.errors import SemcacheError
from semcache.store.postgres.conninfo import ConnInfo
from semcache.store.postgres.pool import Connections
from semcache.store.postgres.queries import Queries
from semcache.store.postgres.schema import SCHEMA_VERSION, SchemaState, inspect

log = logging.getLogger("semcache")

#: Problems list at most this many ids per kind.
_MAX_LISTED = 20


#: Entries inserted by a process between two looks at the planner's row count of the
#: entries table (one round trip each; see PlannerStatistics).
STATISTICS_CHECK_ROWS = 1_000


class PlannerStatistics:
    """Keeps the planner's statistics of the entries table in step with a cache filled
    quickly.

    Without it a cache filled quickly (``put_many`` right after creating it, or a partition
    many times its size at the last ANALYZE) is searched with a plan made for a few dozen
    rows until autovacuum gets to the table (up to ``autovacuum_naptime``, a minute by
    default, later when it is busy or off): a bitmap scan of the whole partition and a sort
    instead of the HNSW index - measured 7.2 ms against 1.3 ms per semantic get at 20k
    entries. Every :data:`STATISTICS_CHECK_ROWS` entries this process inserts,
    :meth:`refresh` compares the planner's row count with the committed one."""

    def __init__(self, conns: Connections, q: Queries, min_entries: int) -> None:
        self._conns, self._q, self._min_entries = conns, q, min_entries
        self._unchecked = 0

    def inserted(self, count: int) -> None:
        """Count committed inserts (refreshing the statistics when due)."""
        if count > 0:
            self._unchecked += count
            if self._unchecked >= STATISTICS_CHECK_ROWS:
                self._unchecked = 0
                self.refresh()

    def refresh(self) -> bool:
        """``ANALYZE`` the entries table when the planner's row count (``reltuples``; -1
        before the first ANALYZE) is under half the committed entries and there are at
        least ``min_entries`` (where the HNSW index is used); True when it ran. ANALYZE
        samples a fixed number of rows (~0.1-0.3 s), takes a lock that blocks neither
        reads nor writes, and runs under a try-lock so that processes filling the cache
        together do not queue to do it one after another. Statistics are an optimisation:
        a failure is logged, never raised (the entries are already committed)."""
        q = self._q

        def check(conn: psycopg.Connection) -> bool:
            with conn.transaction():
                row = conn.execute(q.planner_rows).fetchone()
                planned, entries = (float(row[0]), int(row[1])) if row else (0.0, 0)
                if entries < self._min_entries or planned >= entries / 2:
                    return False
                locked = conn.execute(q.statistics_lock).fetchone()
                if not (locked and locked[0]):
                    return False  # another client is analyzing it now
                conn.execute(f"ANALYZE {q.t['entries']}")
            log.debug("semcache: analyzed %s (%d entries, the planner counted %d)",
                      q.t["entries"], entries, int(planned))
            return True

        try:
            return self._conns.run(check)
        except (psycopg.Error, SemcacheError) as exc:
            log.warning("semcache: could not refresh the statistics of %s: %s",
                        q.t["entries"], exc)
            return False


def read_rows(conns: Connections, sql: str, params: Any = (), *,
              scan: bool = False) -> list[tuple]:
    """Rows of a read; ``scan``: one that may read every row (no statement timeout)."""
    if scan:
        with conns.maintenance() as conn:
            return conn.execute(sql, params, binary=True).fetchall()
    return conns.run(lambda c: c.execute(sql, params, binary=True).fetchall())


def check(conns: Connections, q: Queries, info: ConnInfo, settings: dict[str, str],
          server_version: str, *, quick: bool = False) -> tuple[dict[str, Any], list[str]]:
    """What ``semcache verify`` reports for a PostgreSQL cache: schema version, search
    method and index validity, counters against the rows (unless ``quick``), entries
    pointing at missing partitions, damaged stored vectors."""
    problems: list[str] = []
    with conns.connection() as conn:
        state = inspect(conn, info)
    report: dict[str, Any] = {
        "engine": "postgresql", "location": info.location, "schema": info.schema,
        "server_version": server_version, "schema_version": state.version,
        "expected_schema_version": SCHEMA_VERSION,
        "pgvector": state.pgvector_version if state.ext_schema else None,
        "vectors": "vector" if state.ext_schema else "bytea",
        "hnsw_index": state.hnsw, "search": "hnsw+exact" if state.hnsw else "exact",
    }
    if state.version != SCHEMA_VERSION:
        problems.append(f"schema version {state.version}, expected {SCHEMA_VERSION}")
    if state.ext_schema and not state.hnsw:
        problems.append("the HNSW index on entries.code is missing or invalid "
                        "(searches fall back to exact scans; `semcache vacuum` rebuilds it)")
    counters = {str(n): int(v) for n, v in read_rows(conns, q.counters)}
    counters = {"entries": counters.get("entries", 0), "bytes": counters.get("bytes", 0)}
    report["counters"] = counters
    if not quick:
        _check_rows(conns, q, state, settings, report, problems, counters)
    return report, problems


def _check_rows(conns: Connections, q: Queries, state: SchemaState, settings: dict[str, str],
                report: dict[str, Any], problems: list[str], counters: dict[str, int]) -> None:
    t = q.t
    (n, size, coded, orphan_usage, missing_usage), = read_rows(conns,
        f"SELECT count(*), coalesce(sum(size), 0)::bigint, count(code), "
        f"(SELECT count(*) FROM {t['entry_usage']} u WHERE NOT EXISTS "
        f"(SELECT 1 FROM {t['entries']} e WHERE e.id = u.entry_id)), "
        f"(SELECT count(*) FROM {t['entries']} e WHERE NOT EXISTS "
        f"(SELECT 1 FROM {t['entry_usage']} u WHERE u.entry_id = e.id)) "
        f"FROM {t['entries']}", scan=True)
    report.update({"entries": int(n), "bytes": int(size), "with_code": int(coded)})
    if counters["entries"] != n:
        problems.append(f"counters say {counters['entries']} entries but entries has {n} rows")
    if counters["bytes"] != size:
        problems.append(f"counters say {counters['bytes']} bytes but entries hold {size}")
    if missing_usage:
        problems.append(f"{missing_usage} entries have no entry_usage row")
    dangling = [int(r[0]) for r in read_rows(conns,
        f"SELECT e.id FROM {t['entries']} e WHERE NOT EXISTS (SELECT 1 FROM "
        f"{t['partitions']} p WHERE p.id = e.partition_id) ORDER BY e.id LIMIT %s",
        (_MAX_LISTED,), scan=True)]
    if dangling:
        report["dangling_partition_ids"] = dangling
        problems.append(f"entries point at partitions that do not exist (ids {dangling})")
    parts = read_rows(conns,
        f"SELECT e.partition_id, count(*) AS n, (SELECT coalesce(sum(c.entries), 0) FROM "
        f"{t['partition_counts']} c WHERE c.partition_id = e.partition_id) AS counted "
        f"FROM {t['entries']} e GROUP BY e.partition_id", scan=True)
    off = [int(p) for p, a, b in parts if int(a) != int(b)]
    if off:
        problems.append(f"partition_counts disagree with entries for partitions {off[:10]}")
    if coded:
        _check_vectors(conns, q, state, settings, report, problems)


def _check_vectors(conns: Connections, q: Queries, state: SchemaState,
                   settings: dict[str, str], report: dict[str, Any],
                   problems: list[str]) -> None:
    """Entries with a code whose stored vector rescoring skips (store/rescore.py)."""
    dim = settings.get("dim")
    if dim is None or not dim.isdigit():
        return
    t = q.t
    if state.ext_schema:
        norm = f"{q.ext}.vector_norm(e.vector)"
        bad_sql = (f"e.vector IS NULL OR {q.ext}.vector_dims(e.vector) <> %s OR NOT "
                   f"({norm} > 0 AND {norm} < 'Infinity'::float8)")
    else:  # bytea: the length only (the values are checked when rescored)
        bad_sql = "e.vector IS NULL OR length(e.vector) <> 4 * %s"
    bad = [int(r[0]) for r in read_rows(conns,
        f"SELECT e.id FROM {t['entries']} e WHERE e.code IS NOT NULL AND ({bad_sql}) "
        "ORDER BY e.id", (int(dim),), scan=True)]
    if bad:
        report["damaged_vectors"] = bad[:_MAX_LISTED]
        problems.append(f"{len(bad)} entries have a damaged stored vector (missing, not "
                        f"{dim} floats, zero or not finite): semantic lookups skip them "
                        f"(ids {bad[:_MAX_LISTED]})")


def recount(conns: Connections, q: Queries, info: ConnInfo) -> int:
    """Recount entries/bytes/partition sizes from the rows (after hand-made changes that
    bypassed the triggers), drop expired claims, VACUUM ANALYZE; returns how far the entry
    counter had drifted."""
    t = q.t
    with conns.transaction(["BEGIN"], bounded=False) as conn:
        # SHARE blocks writers (not readers) while the totals are replaced.
        conn.execute(f"LOCK TABLE {t['entries']} IN SHARE MODE")
        before = conn.execute(q.entry_count).fetchone()
        conn.execute(f"DELETE FROM {t['counters']} WHERE name IN ('entries', 'bytes')")
        conn.execute(f"DELETE FROM {t['partition_counts']}")
        conn.execute(
            f"INSERT INTO {t['counters']} (name, shard, value) "
            f"SELECT 'entries', 0, count(*) FROM {t['entries']} "
            f"UNION ALL SELECT 'bytes', 0, coalesce(sum(size), 0) FROM {t['entries']}")
        conn.execute(
            f"INSERT INTO {t['partition_counts']} (partition_id, shard, entries) "
            f"SELECT partition_id, 0, count(*) FROM {t['entries']} GROUP BY partition_id")
        after = conn.execute(q.entry_count).fetchone()
        conn.execute(q.purge_claims)  # leases of holders that died
        conn.execute("COMMIT")
    return abs(int(after[0] if after else 0) - int(before[0] if before else 0))


def analyze(conns: Connections, q: Queries, info: ConnInfo) -> None:
    """VACUUM ANALYZE every table of the cache."""
    with conns.maintenance() as conn:  # driver errors come out translated
        for name in ("entries", "entry_usage", "partitions", "counters", "partition_counts",
                     "feedback", "claims", "counter_minutes", "outcomes", "outcome_pools"):
            conn.execute(f"VACUUM (ANALYZE) {q.t[name]}")


__all__ = ["analyze", "check", "read_rows", "recount"]
