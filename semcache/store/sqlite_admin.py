"""Operator reads of the SQLite engine: listing, summaries, integrity checks.

Kept apart from the lookup path (``semcache.store.sqlite``) so each reads in one sitting;
:class:`~semcache.store.sqlite.SQLiteStore` inherits these methods.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from semcache.store.base import (
    EntryFilter,
    EntryOrder,
    EntryRecord,
    NamespaceSummary,
    Verdict,
    expires_to_int,
)
from semcache.store.filters import compile_filter, order_sql

_RECORD_COLUMNS = (
    "e.id, e.key_hash, e.namespace, p.scope, e.prompt, e.response, e.metadata, e.tokens, "
    "e.size, e.created_at, e.accessed_at, e.expires_at, e.ttl, e.hits, e.code IS NOT NULL"
)
_FROM = "FROM entries e JOIN partitions p ON p.id = e.partition_id"
#: Ids listed per category in a check report (the counts are always complete).
_MAX_LISTED = 20


class SQLiteAdmin:
    """Admin reads; the host class provides ``_query`` and ``path``."""

    path: str

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def size_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                   if os.path.exists(p))

    def count_entries(self, where: EntryFilter) -> int:
        cond, params = compile_filter(where)
        return int(self._query(f"SELECT count(*) {_FROM} WHERE {cond}", params)[0][0])

    def list_entries(self, where: EntryFilter, *, order: EntryOrder = "id",
                     limit: int | None = None, after_id: int | None = None,
                     with_vector: bool = False) -> list[EntryRecord]:
        cond, params = compile_filter(where)
        if after_id is not None:
            cond += " AND e.id > ?"
            params.append(after_id)
        cols = _RECORD_COLUMNS + (", e.vector" if with_vector else ", NULL") + ", e.key_material"
        rows = self._query(
            f"SELECT {cols} {_FROM} WHERE {cond} ORDER BY {order_sql(order)} LIMIT ?",
            (*params, -1 if limit is None else limit))
        return [EntryRecord(
            id=r[0], key_hash=bytes(r[1]), namespace=r[2], scope=r[3], prompt=r[4],
            response=r[5], metadata=r[6], tokens=r[7], size=r[8], created_at=r[9],
            accessed_at=r[10], expires_at=r[11], ttl=r[12], hits=r[13], has_code=bool(r[14]),
            vector=r[15], key_material=r[16]) for r in rows]

    def namespace_summary(self, now: float) -> list[NamespaceSummary]:
        rows = self._query(
            "SELECT namespace, count(*), sum(expires_at IS NOT NULL AND expires_at <= ?), "
            "sum(hits), sum(size) FROM entries GROUP BY namespace ORDER BY count(*) DESC",
            (now,))
        return [NamespaceSummary(ns, int(n), int(exp or 0), int(h or 0), int(b or 0))
                for ns, n, exp, h, b in rows]

    def counter_history(self, since_minute: int, step: int) -> list[tuple[int, str, int]]:
        # Past minutes, and the current one's counts kept in counters (see add_counters).
        return [(int(m), str(n), int(v)) for m, n, v in self._query(
            "SELECT minute / ? * ?, name, sum(value) FROM (SELECT minute, name, value FROM "
            "counter_minutes UNION ALL SELECT (SELECT value FROM counters WHERE name = "
            "'minute'), substr(name, 8), value FROM counters WHERE name GLOB 'minute:*') "
            "WHERE minute >= ? GROUP BY 1, 2", (int(step), int(step), int(since_minute)))]

    def blocked_entries(self, query_hash: bytes) -> set[int]:
        return {int(r[0]) for r in self._query(
            "SELECT entry_id FROM feedback WHERE query_hash = ? AND correct = 0", (query_hash,))}

    def verdicts(self, namespace: str | None = None) -> list[Verdict]:
        cond, params = ("WHERE namespace = ?", (namespace,)) if namespace is not None else ("", ())
        return [Verdict(int(r[0]), r[1], r[2], r[3], float(r[4]), bool(r[5]), float(r[6]))
                for r in self._query(
                    "SELECT entry_id, namespace, query_hash, kind, similarity, correct, "
                    f"created_at FROM feedback {cond} ORDER BY id", params)]

    def partitions(self, namespace: str) -> list[tuple[int, str]]:
        return [(int(i), str(s)) for i, s in self._query(
            "SELECT id, scope FROM partitions WHERE namespace = ? ORDER BY id", (namespace,))]

    # -- integrity -----------------------------------------------------------------------

    def check(self, *, quick: bool = False) -> tuple[dict[str, Any], list[str]]:
        """``PRAGMA integrity_check``, schema version, bookkeeping rows and the vec0 table
        against ``entries`` (the code mirror is checked by the search layer)."""
        from semcache.store.schema import SCHEMA_VERSION

        problems: list[str] = []
        pragma = "quick_check" if quick else "integrity_check"
        messages = [str(r[0]) for r in self._query(f"PRAGMA {pragma}")]
        report: dict[str, Any] = {
            "integrity": "ok" if messages == ["ok"] else messages[:_MAX_LISTED],
            "expected_schema_version": SCHEMA_VERSION,
        }
        if messages != ["ok"]:
            problems.append(f"PRAGMA {pragma}: " + "; ".join(messages[:5]))
            return report, problems
        version = self._query("SELECT max(version) FROM schema_migrations")[0][0]
        report["schema_version"] = version
        if version != SCHEMA_VERSION:
            problems.append(f"schema version {version}, expected {SCHEMA_VERSION}")
        report["journal_mode"] = self._query("PRAGMA journal_mode")[0][0]
        self._check_bookkeeping(report, problems)
        return report, problems

    def _check_bookkeeping(self, report: dict[str, Any], problems: list[str]) -> None:
        entries = int(self._query("SELECT count(*) FROM entries")[0][0])
        report["entries"] = entries
        report["with_code"] = int(self._query(
            "SELECT count(*) FROM entries WHERE code IS NOT NULL")[0][0])
        counted = self._query("SELECT value FROM counters WHERE name = 'entries'")
        if not counted or counted[0][0] != entries:
            problems.append(f"counters.entries is {counted[0][0] if counted else None} "
                            f"but entries has {entries} rows")
        dangling = int(self._query(
            "SELECT count(*) FROM entries WHERE partition_id NOT IN (SELECT id FROM partitions)"
        )[0][0])
        if dangling:
            problems.append(f"{dangling} entries point at a partition that does not exist")

    def check_code_index(self, code_rows: tuple[Any, ...]) -> tuple[dict[str, Any], list[str]]:
        """The sqlite-vec table ``entry_codes`` against the entries that have codes.

        Entries above ``sync_state.codes_through`` have no row yet by design (the table is
        caught up in batches; the SQL search scans them directly): they are reported as
        ``pending``, not missing. A row above the mark is an orphan (``vacuum`` drops it)."""
        import numpy as np

        ids, parts, expires, codes = code_rows[:4]
        through = int(self._query("SELECT codes_through FROM sync_state WHERE id = 1")[0][0])
        vec = {int(r[0]): (int(r[1]), int(r[2]), bytes(r[3])) for r in self._query(
            "SELECT entry_id, partition_id, expires_at, code FROM entry_codes")}
        db = {int(i): (int(p), expires_to_int(None if np.isnan(e) else float(e)), c.tobytes())
              for i, p, e, c in zip(ids.tolist(), parts.tolist(), expires.tolist(), codes,
                                    strict=True)}
        pending = {i for i in db if i > through}
        orphans = (set(vec) - set(db)) | {i for i in vec if i > through}
        missing = set(db) - set(vec) - pending
        differ = [i for i in set(db) & set(vec) if db[i] != vec[i] and i not in orphans]
        out: dict[str, Any] = {
            "rows": len(vec), "orphans": len(orphans), "missing": len(missing),
            "mismatched": len(differ), "agrees": not (orphans or missing or differ)}
        if pending:
            out["pending"] = len(pending)
        problems: list[str] = []
        if orphans:
            out["orphan_ids"] = sorted(orphans)[:_MAX_LISTED]
            problems.append(f"entry_codes has {len(orphans)} rows without an entry")
        if missing:
            out["missing_ids"] = sorted(missing)[:_MAX_LISTED]
            problems.append(f"{len(missing)} entries with a code are missing from entry_codes")
        if differ:
            out["mismatched_ids"] = sorted(differ)[:_MAX_LISTED]
            problems.append(f"{len(differ)} entry_codes rows differ from their entry")
        return out, problems


__all__ = ["SQLiteAdmin"]
