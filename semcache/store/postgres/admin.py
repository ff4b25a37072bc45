"""Admin reads and maintenance of the PostgreSQL engine (listing, stats, verify, vacuum).

Mixed into :class:`~semcache.store.postgres.store.PostgresStore`; everything here reads
or repairs whole tables and is never on a lookup path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semcache.errors import ReadOnlyCacheError
from semcache.store.base import (
    EntryFilter,
    EntryOrder,
    EntryRecord,
    NamespaceSummary,
    Verdict,
)
from semcache.store.filters import compile_filter, order_sql
from semcache.store.postgres.queries import RECORD_COLUMNS

if TYPE_CHECKING:
    from semcache.store.postgres.pool import Connections
    from semcache.store.postgres.queries import Queries
    from semcache.store.postgres.schema import SchemaState

#: Problems list at most this many ids per kind.
_MAX_LISTED = 20


class AdminMixin:
    """Admin operations; expects the attributes PostgresStore sets."""

    _conns: Connections
    queries: Queries
    state: SchemaState
    schema: str
    location: str
    readonly: bool
    settings: dict[str, str]
    server_version: str

    def _rows(self, sql: str, params: Any = (), *, binary: bool = True,
              scan: bool = False) -> list[tuple]:
        """Rows of a read; ``scan``: one that may read every row (no statement timeout)."""
        if scan:
            with self._conns.maintenance() as conn:
                return conn.execute(sql, params, binary=binary).fetchall()
        return self._conns.run(lambda c: c.execute(sql, params, binary=binary).fetchall())

    def count_entries(self, where: EntryFilter) -> int:
        clause, params = compile_filter(where, mark="%s")
        rows = self._rows(f"SELECT count(*) FROM {self.queries.with_parts} WHERE {clause}",
                          params, scan=True)
        return int(rows[0][0])

    def list_entries(self, where: EntryFilter, *, order: EntryOrder = "id",
                     limit: int | None = None, after_id: int | None = None,
                     with_vector: bool = False) -> list[EntryRecord]:
        """Entries the filter selects, in ``order``; ``after_id`` pages by id."""
        clause, params = compile_filter(where, mark="%s")
        if after_id is not None:
            clause += " AND e.id > %s"
            params.append(int(after_id))
        cols = RECORD_COLUMNS.format(vector="e.vector" if with_vector else "NULL::bytea")
        sql = (f"SELECT {cols} FROM {self.queries.with_parts} WHERE {clause} "
               f"ORDER BY {order_sql(order)}")
        if limit is not None:
            sql += " LIMIT %s"
            params.append(int(limit))
        return [EntryRecord(*r) for r in self._rows(sql, params, scan=limit is None)]

    def namespace_summary(self, now: float) -> list[NamespaceSummary]:
        rows = self._rows(
            "SELECT e.namespace, count(*), count(*) FILTER (WHERE e.expires_at IS NOT NULL "
            "AND e.expires_at <= %s), coalesce(sum(u.hits), 0)::bigint, "
            f"coalesce(sum(e.size), 0)::bigint FROM {self.queries.joined} "
            "GROUP BY e.namespace ORDER BY e.namespace", (now,), scan=True)
        return [NamespaceSummary(str(n), int(a), int(b), int(c), int(d))
                for n, a, b, c, d in rows]

    def counter_history(self, since_minute: int, step: int) -> list[tuple[int, str, int]]:
        rows = self._rows(self.queries.counter_history,
                          {"step": int(step), "since": int(since_minute)})
        return [(int(m), str(n), int(v)) for m, n, v in rows]

    def blocked_entries(self, query_hash: bytes) -> set[int]:
        return {int(r[0]) for r in self._rows(self.queries.blocked, (query_hash,))}

    def verdicts(self, namespace: str | None = None) -> list[Verdict]:
        where, params = ("WHERE namespace = %s", (namespace,)) if namespace is not None \
            else ("", ())
        return [Verdict(int(r[0]), str(r[1]), None if r[2] is None else bytes(r[2]), str(r[3]),
                        float(r[4]), bool(r[5]), float(r[6]))
                for r in self._rows(self.queries.verdicts.format(where=where), params)]

    def partitions(self, namespace: str) -> list[tuple[int, str]]:
        rows = self._rows(f"SELECT id, scope FROM {self.queries.t['partitions']} "
                          "WHERE namespace = %s ORDER BY id", (namespace,))
        return [(int(i), str(s)) for i, s in rows]

    def size_bytes(self) -> int:
        """Bytes of the schema's tables, their indexes and TOAST data on the server."""
        rows = self._rows(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')", (self.schema,))
        return int(rows[0][0])

    # -- verify -------------------------------------------------------------------------

    def check(self, *, quick: bool = False) -> tuple[dict[str, Any], list[str]]:
        """What ``semcache verify`` reports for a PostgreSQL cache: schema version, search
        method and index validity, counters against the rows (unless ``quick``), entries
        pointing at missing partitions, vectors of the wrong length."""
        from semcache.store.postgres.schema import SCHEMA_VERSION, inspect

        problems: list[str] = []
        t = self.queries.t
        with self._conns.connection() as conn:
            state = inspect(conn, self.info)  # type: ignore[attr-defined]
        report: dict[str, Any] = {
            "engine": "postgresql", "location": self.location, "schema": self.schema,
            "server_version": self.server_version, "schema_version": state.version,
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
        counters = self.counters()  # type: ignore[attr-defined]
        report["counters"] = {"entries": counters["entries"], "bytes": counters["bytes"]}
        if quick:
            return report, problems
        self._check_rows(report, problems, counters, t)
        return report, problems

    def _check_rows(self, report: dict[str, Any], problems: list[str],
                    counters: dict[str, int], t: dict[str, str]) -> None:
        (n, size, coded, orphan_usage, missing_usage), = self._rows(
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
        dangling = [int(r[0]) for r in self._rows(
            f"SELECT e.id FROM {t['entries']} e WHERE NOT EXISTS (SELECT 1 FROM "
            f"{t['partitions']} p WHERE p.id = e.partition_id) ORDER BY e.id LIMIT %s",
            (_MAX_LISTED,), scan=True)]
        if dangling:
            report["dangling_partition_ids"] = dangling
            problems.append(f"entries point at partitions that do not exist (ids {dangling})")
        parts = self._rows(
            f"SELECT e.partition_id, count(*) AS n, (SELECT coalesce(sum(c.entries), 0) FROM "
            f"{t['partition_counts']} c WHERE c.partition_id = e.partition_id) AS counted "
            f"FROM {t['entries']} e GROUP BY e.partition_id", scan=True)
        off = [int(p) for p, a, b in parts if int(a) != int(b)]
        if off:
            problems.append(f"partition_counts disagree with entries for partitions {off[:10]}")
        dim = self.settings.get("dim")
        if dim is not None and coded:
            length = "vector_dims(e.vector)" if self.state.ext_schema else "length(e.vector) / 4"
            if self.state.ext_schema:
                length = f"{self.queries.ext}.{length}"
            bad = [int(r[0]) for r in self._rows(
                f"SELECT e.id FROM {t['entries']} e WHERE e.code IS NOT NULL AND "
                f"(e.vector IS NULL OR {length} <> %s) ORDER BY e.id LIMIT %s",
                (int(dim), _MAX_LISTED), scan=True)]
            if bad:
                report["bad_vector_ids"] = bad
                problems.append(f"entries with a code but no vector of dimension {dim} "
                                f"(ids {bad})")

    # -- maintenance --------------------------------------------------------------------

    def vacuum(self) -> dict[str, int]:
        """Recount entries/bytes/partition sizes from the rows (after hand-made changes
        that bypassed the triggers), rebuild a missing HNSW index, VACUUM ANALYZE."""
        if self.readonly:
            raise ReadOnlyCacheError(f"cache {self.location} is opened read-only")
        t = self.queries.t
        with self._conns.transaction(["BEGIN"], bounded=False) as conn:
            # SHARE blocks writers (not readers) while the totals are replaced.
            conn.execute(f"LOCK TABLE {t['entries']} IN SHARE MODE")
            before = conn.execute(self.queries.entry_count).fetchone()
            conn.execute(f"DELETE FROM {t['counters']} WHERE name IN ('entries', 'bytes')")
            conn.execute(f"DELETE FROM {t['partition_counts']}")
            conn.execute(
                f"INSERT INTO {t['counters']} (name, shard, value) "
                f"SELECT 'entries', 0, count(*) FROM {t['entries']} "
                f"UNION ALL SELECT 'bytes', 0, coalesce(sum(size), 0) FROM {t['entries']}")
            conn.execute(
                f"INSERT INTO {t['partition_counts']} (partition_id, shard, entries) "
                f"SELECT partition_id, 0, count(*) FROM {t['entries']} GROUP BY partition_id")
            after = conn.execute(self.queries.entry_count).fetchone()
            conn.execute(self.queries.purge_claims)  # leases of holders that died
            conn.execute("COMMIT")
        rebuilt = self._rebuild_hnsw()
        with self._conns.maintenance() as conn:  # driver errors come out translated
            for name in ("entries", "entry_usage", "partitions", "counters", "partition_counts",
                         "feedback", "claims", "counter_minutes"):
                conn.execute(f"VACUUM (ANALYZE) {t[name]}")
        drift = abs(int(after[0] if after else 0) - int(before[0] if before else 0))
        return {"counter_drift": drift, "hnsw_rebuilt": int(rebuilt)}

    def _rebuild_hnsw(self) -> bool:
        """Recreate the HNSW index if pgvector is used and the index is missing/invalid."""
        if not self.state.ext_schema or self.state.hnsw:
            return False
        from semcache.store.postgres.bulk import rebuild_search_index

        rebuild_search_index(self)  # type: ignore[arg-type]
        return True


__all__ = ["AdminMixin"]
