"""The error bound's evidence in the PostgreSQL schema (migration 0008), as the SQLite
engine's ``store/sqlite/outcomes.py``: outcomes per entry, pools per namespace and bin."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from semcache.store.base import OUTCOMES_PER_ENTRY, OUTCOMES_PER_NAMESPACE, Outcome, OutcomePool

_COLUMNS = "entry_id, namespace, similarity, prior, bin, correct, source, created_at"


class OutcomeQueries:
    """SQL text of one schema's outcome tables (``t``: table name -> qualified name)."""

    def __init__(self, t: dict[str, str]) -> None:
        o, p = t["outcomes"], t["outcome_pools"]
        self.insert = f"INSERT INTO {o} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        # An imported outcome: moved to its entry if an earlier import recorded it already.
        self.restore = (
            f"WITH u AS (UPDATE {o} SET entry_id = %(entry)s WHERE namespace = %(ns)s AND "
            "similarity = %(sim)s AND prior = %(prior)s AND bin = %(bin)s AND correct = "
            "%(correct)s AND source = %(source)s AND created_at = %(at)s RETURNING 1) "
            f"INSERT INTO {o} ({_COLUMNS}) SELECT %(entry)s, %(ns)s, %(sim)s, %(prior)s, "
            "%(bin)s, %(correct)s, %(source)s, %(at)s WHERE NOT EXISTS (SELECT 1 FROM u)")
        pool = (f"INSERT INTO {p} AS p (namespace, bin, n_right, n_wrong, expected) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (namespace, bin) DO UPDATE SET ")
        # Pools are added to in (namespace, bin) order: two writers never wait on each other
        # in opposite orders.
        self.add_pool = pool + ("n_right = p.n_right + excluded.n_right, n_wrong = p.n_wrong "
                                "+ excluded.n_wrong, expected = p.expected + excluded.expected")
        self.max_pool = pool + ("n_right = greatest(p.n_right, excluded.n_right), n_wrong = "
                                "greatest(p.n_wrong, excluded.n_wrong), expected = "
                                "greatest(p.expected, excluded.expected)")
        self.trim_entry = (f"DELETE FROM {o} WHERE entry_id = %s AND id <= (SELECT id FROM {o} "
                           "WHERE entry_id = %s ORDER BY id DESC LIMIT 1 OFFSET %s)")
        self.trim_namespace = (f"DELETE FROM {o} WHERE namespace = %s AND id <= (SELECT id "
                               f"FROM {o} WHERE namespace = %s ORDER BY id DESC LIMIT 1 "
                               "OFFSET %s)")
        self.of_entry = f"SELECT {_COLUMNS} FROM {o} WHERE entry_id = %s ORDER BY id"
        self.all = f"SELECT {_COLUMNS} FROM {o} {{where}} ORDER BY id"
        self.pools = (f"SELECT bin, n_right, n_wrong, expected FROM {p} WHERE namespace = %s "
                      "ORDER BY bin")


def record_outcomes(conn: psycopg.Connection, q: OutcomeQueries,
                    outcomes: Sequence[Outcome], pool: bool = True) -> None:
    if not outcomes:
        return
    with conn.cursor() as cur:
        if pool:
            cur.executemany(q.insert, [(o.entry_id, o.namespace, o.similarity, o.prior, o.bin,
                                        bool(o.correct), o.source, o.created_at)
                                       for o in outcomes])
        else:
            cur.executemany(q.restore, [
                {"entry": o.entry_id, "ns": o.namespace, "sim": o.similarity, "prior": o.prior,
                 "bin": o.bin, "correct": bool(o.correct), "source": o.source,
                 "at": o.created_at} for o in outcomes])
        pools: dict[tuple[str, int], list[Any]] = {}
        for o in outcomes:
            acc = pools.setdefault((o.namespace, o.bin), [0, 0, 0.0])
            acc[0 if o.correct else 1] += 1
            acc[2] += o.prior
        if pool:
            cur.executemany(q.add_pool, [(ns, b, r, w, e) for (ns, b), (r, w, e)
                                         in sorted(pools.items())])
        cur.executemany(q.trim_entry, [(i, i, OUTCOMES_PER_ENTRY)
                                       for i in sorted({o.entry_id for o in outcomes})])
        cur.executemany(q.trim_namespace, [(ns, ns, OUTCOMES_PER_NAMESPACE)
                                           for ns in sorted({o.namespace for o in outcomes})])


def restore_pools(conn: psycopg.Connection, q: OutcomeQueries, namespace: str,
                  pools: Sequence[OutcomePool]) -> None:
    if pools:
        with conn.cursor() as cur:
            cur.executemany(q.max_pool, [(namespace, p.bin, p.right, p.wrong, p.expected)
                                         for p in sorted(pools, key=lambda p: p.bin)])


Rows = Callable[[str, Any], list[tuple[Any, ...]]]


def _outcome(r: tuple[Any, ...]) -> Outcome:
    return Outcome(int(r[0]), str(r[1]), float(r[2]), float(r[3]), int(r[4]), bool(r[5]),
                   str(r[6]), float(r[7]))


def entry_outcomes(rows: Rows, q: OutcomeQueries, entry_id: int) -> list[Outcome]:
    return [_outcome(r) for r in rows(q.of_entry, (entry_id,))]


def outcomes(rows: Rows, q: OutcomeQueries, namespace: str | None) -> list[Outcome]:
    where, params = ("WHERE namespace = %s", (namespace,)) if namespace is not None \
        else ("", ())
    return [_outcome(r) for r in rows(q.all.format(where=where), params)]


def outcome_pools(rows: Rows, q: OutcomeQueries, namespace: str) -> list[OutcomePool]:
    return [OutcomePool(int(b), int(r), int(w), float(e))
            for b, r, w, e in rows(q.pools, (namespace,))]


__all__ = ["OutcomeQueries", "entry_outcomes", "outcome_pools", "outcomes", "record_outcomes",
           "restore_pools"]
