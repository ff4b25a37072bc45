"""The error bound's evidence in the SQLite file (migration 0008): outcomes per entry and
their pools per namespace and score bin. Writes run in the caller's write transaction (the
put that brought the fresh answer), reads are one indexed statement each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import apsw

from semcache.store.base import OUTCOMES_PER_ENTRY, OUTCOMES_PER_NAMESPACE, Outcome, OutcomePool

_COLUMNS = "entry_id, namespace, similarity, prior, bin, correct, source, created_at"
_ADD_POOL = ("INSERT INTO outcome_pools (namespace, bin, n_right, n_wrong, expected) "
             "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, bin) DO UPDATE SET "
             "n_right = n_right + excluded.n_right, n_wrong = n_wrong + excluded.n_wrong, "
             "expected = expected + excluded.expected")
_MAX_POOL = ("INSERT INTO outcome_pools (namespace, bin, n_right, n_wrong, expected) "
             "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, bin) DO UPDATE SET "
             "n_right = max(n_right, excluded.n_right), "
             "n_wrong = max(n_wrong, excluded.n_wrong), "
             "expected = max(expected, excluded.expected)")


def record_outcomes(conn: apsw.Connection, outcomes: Sequence[Outcome],
                    pool: bool = True) -> None:
    """Insert, keep the newest per entry and per namespace, add to the pools."""
    if not outcomes:
        return
    rows = [(o.entry_id, o.namespace, o.similarity, o.prior, o.bin, int(o.correct), o.source,
             o.created_at) for o in outcomes]
    if not pool:  # an import: move what an earlier run of it recorded
        fresh = []
        for row in rows:
            conn.execute("UPDATE outcomes SET entry_id = ? WHERE namespace = ? AND "
                         "similarity = ? AND prior = ? AND bin = ? AND correct = ? AND "
                         "source = ? AND created_at = ?", row)
            if not conn.changes():
                fresh.append(row)
        rows = fresh
    conn.executemany(f"INSERT INTO outcomes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    if pool:
        conn.executemany(_ADD_POOL, [(o.namespace, o.bin, int(o.correct), int(not o.correct),
                                      o.prior) for o in outcomes])
    for entry_id in {o.entry_id for o in outcomes}:
        conn.execute("DELETE FROM outcomes WHERE entry_id = ? AND id <= (SELECT id FROM "
                     "outcomes WHERE entry_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                     (entry_id, entry_id, OUTCOMES_PER_ENTRY))
    for ns in {o.namespace for o in outcomes}:
        conn.execute("DELETE FROM outcomes WHERE namespace = ? AND id <= (SELECT id FROM "
                     "outcomes WHERE namespace = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                     (ns, ns, OUTCOMES_PER_NAMESPACE))


def restore_pools(conn: apsw.Connection, namespace: str, pools: Sequence[OutcomePool]) -> None:
    conn.executemany(_MAX_POOL, [(namespace, p.bin, p.right, p.wrong, p.expected)
                                 for p in pools])


Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def _outcome(r: tuple[Any, ...]) -> Outcome:
    return Outcome(int(r[0]), str(r[1]), float(r[2]), float(r[3]), int(r[4]), bool(r[5]),
                   str(r[6]), float(r[7]))


def entry_outcomes(query: Query, entry_id: int) -> list[Outcome]:
    return [_outcome(r) for r in query(
        f"SELECT {_COLUMNS} FROM outcomes WHERE entry_id = ? ORDER BY id", (entry_id,))]


def outcomes(query: Query, namespace: str | None) -> list[Outcome]:
    cond, params = ("WHERE namespace = ?", (namespace,)) if namespace is not None else ("", ())
    return [_outcome(r) for r in query(
        f"SELECT {_COLUMNS} FROM outcomes {cond} ORDER BY id", params)]


def outcome_pools(query: Query, namespace: str) -> list[OutcomePool]:
    return [OutcomePool(int(b), int(r), int(w), float(e)) for b, r, w, e in query(
        "SELECT bin, n_right, n_wrong, expected FROM outcome_pools WHERE namespace = ? "
        "ORDER BY bin", (namespace,))]


__all__ = ["entry_outcomes", "outcome_pools", "outcomes", "record_outcomes", "restore_pools"]
