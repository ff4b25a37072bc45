"""One write transaction on PostgreSQL (:class:`PgWriteTxn`, the engine's ``StoreTxn``).

Row locks are taken so that concurrent clients cannot deadlock each other in the common
paths: first the transaction's own work (entries by key - deleting one also locks its usage
row -, purges and LRU eviction skipping rows others hold), then at the end the batched
hits (usage rows and sliding expiries, never waiting: ``SKIP LOCKED``), then - just before
COMMIT - the counter shard rows (sorted by name, then partition). semcache counts what its
own statements did (from ``RETURNING``) and adds it to the counters of its shard in
:meth:`PgWriteTxn.finish`; the schema's trigger recounts only after changes made by hand
(it sees the ``semcache.app`` flag set by ``BEGIN``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from semcache.errors import InvalidInputError
from semcache.store.base import (
    SERIES_RETENTION_MINUTES,
    AccessUpdate,
    EntryFilter,
    NewEntry,
    Outcome,
    OutcomePool,
    Verdict,
    entry_size,
)
from semcache.store.filters import compile_filter
from semcache.store.postgres import outcomes as outcome_sql
from semcache.store.postgres.adapters import code_literal, vector_from
from semcache.store.postgres.queries import SHARDS, Queries

if TYPE_CHECKING:
    from semcache.store.postgres.pool import Connections

#: Minutes after which the shards of a minute's counters are folded into shard 0, and
#: how often (in minutes) one process folds and prunes (see migration 0007).
FOLD_AFTER_MINUTES = 120
FOLD_EVERY_MINUTES = 10

#: How often an insert retries when a concurrent client inserted the same key between
#: this transaction's DELETE and INSERT (each retry deletes that newer row).
_INSERT_TRIES = 8

#: Entries above which a batch insert or delete runs without the statement timeout.
LARGE_BATCH = 256

#: The counters a client may add to (entries and bytes are kept by the engine).
COUNTER_NAMES = frozenset(("hits", "exact_hits", "semantic_hits", "misses", "puts",
                           "evictions", "expirations", "tokens_saved", "guard_rejections",
                           "feedback_right", "feedback_wrong", "damaged_vectors",
                           "explorations", "outcomes_right", "outcomes_wrong"))


def _checked_name(name: str) -> str:
    if name not in COUNTER_NAMES and name not in ("entries", "bytes"):
        raise InvalidInputError(f"unknown counter {name!r}")
    return name


class StoreState(Protocol):
    """What a transaction reads and updates of its store's process-wide state
    (``PostgresStore``): the schema's incarnation, and the minute this process last folded
    and pruned the counters' time series; its pool (to lift a transaction's statement
    timeout)."""

    incarnation: str | None
    series_folded: int

    @property
    def connections(self) -> Connections: ...

    def check_incarnation(self, force: bool = False, conn: Any = None) -> bool: ...


def put_alone(conn: psycopg.Connection, queries: Queries, store: StoreState, e: NewEntry,
              pid: int, max_entries: int | None, now: float) -> int | None:
    """One put as one statement on an autocommit connection (``Queries.put_alone``): its
    own transaction, committed when this returns an id. None: nothing was written - the
    cache is full, the incarnation moved, or a concurrent put of the same key won - and
    the caller writes the put in a transaction as usual. Also None when this minute's
    counters are due to be folded (a transaction does that)."""
    minute = int(now // 60)
    if minute - store.series_folded >= FOLD_EVERY_MINUTES:
        return None
    params = _entry_params(e, pid, store.incarnation, queries.ext is not None)
    params["max"] = max_entries
    params["minute"] = minute
    try:
        row = conn.execute(queries.put_alone, params).fetchone()
    except psycopg.errors.DeadlockDetected:
        # PostgreSQL does not promise the order in which a statement's data-modifying CTEs
        # take their row locks, so this statement can deadlock with a concurrent write
        # transaction (seen with 8 writers). It ran alone in autocommit: nothing was
        # written; the caller's transaction, in the usual lock order, writes the put.
        return None
    return None if row is None or row[0] is None else int(row[0])


def _entry_params(e: NewEntry, pid: int, incarnation: str | None,
                  pgvector: bool) -> dict[str, Any]:
    """The parameters of the statements that insert ``e`` (``Queries.insert``)."""
    vector = None if e.vector is None else (vector_from(e.vector) if pgvector else e.vector)
    return {"inc": incarnation,
            "key": e.key_hash, "ns": e.namespace, "scope": e.scope, "pid": pid,
            "prompt": e.prompt,
            "response": e.response, "metadata": e.metadata, "size": entry_size(e),
            "tokens": e.tokens, "created": e.created_at, "expires": e.expires_at,
            "ttl": e.ttl, "code": None if e.code is None else code_literal(e.code),
            "vector": vector, "material": e.key_material,
            "accessed": e.created_at if e.accessed_at is None else e.accessed_at,
            "hits": e.hits}


class PgWriteTxn:
    """The operations allowed inside :meth:`PostgresStore.write`. ``known_partition``
    looks a (namespace, scope) up among the partition ids the store remembers; those ids
    hold only in the incarnation of the schema ``store`` names."""

    def __init__(self, conn: psycopg.Connection, queries: Queries,
                 known_partition: Callable[[tuple[str, str]], int | None],
                 store: StoreState, *, pipelined: bool = False) -> None:
        self._known_partition = known_partition
        self._store = store
        self._pipelined = pipelined
        self._q = queries
        self.conn = conn
        self._counts: dict[str, int] = defaultdict(int)
        self._parts: dict[int, int] = defaultdict(int)
        #: Partitions this transaction created or looked up: (namespace, scope) -> id.
        self.partitions: dict[tuple[str, str], int] = {}
        #: Entries this transaction inserted (replacements included).
        self.inserted = 0
        #: Entries committed by everyone, as last read by a statement of this transaction.
        self._committed_entries: int | None = None
        #: Batched hits to write at the end (see :meth:`apply_access`).
        self._access: dict[int, AccessUpdate] = {}
        #: Counts added by :meth:`add_counters`, for the minute ``_minute`` (time series).
        self._series: dict[str, int] = defaultdict(int)
        self._minute = 0
        self._unbounded = False
        #: The max_bytes lock is held (see :meth:`entry_bytes`).
        self._bytes_locked = False

    def unbounded(self) -> None:
        """Lift the statement timeout for the rest of this transaction: work that may
        touch every row (clear, purge, a large batch, an import) - see
        :meth:`~semcache.store.postgres.pool.Connections.unbound`."""
        if not self._unbounded:
            self._unbounded = True
            self._store.connections.unbound(self.conn)

    # -- bookkeeping --------------------------------------------------------------------

    def _removed(self, rows: list[tuple[int, int, int]]) -> list[int]:
        """Account for deleted (id, partition_id, size) rows; returns their ids."""
        for _, pid, size in rows:
            self._counts["entries"] -= 1
            self._counts["bytes"] -= int(size)
            self._parts[int(pid)] -= 1
        return [int(r[0]) for r in rows]

    def _removed_summed(self, rows: list[tuple[int, int, int]]) -> int:
        """Account for deleted rows summed per partition (id, count, bytes)."""
        n = 0
        for pid, count, size in rows:
            self._counts["entries"] -= int(count)
            self._counts["bytes"] -= int(size)
            self._parts[int(pid)] -= int(count)
            n += int(count)
        return n

    def finish(self) -> None:
        """Write the batched hits, add this transaction's counts to its shard and COMMIT;
        the counts and COMMIT travel together (one round trip)."""
        if self._access:
            self._write_access()
        shard = int(self.conn.info.backend_pid % SHARDS)
        names = sorted(k for k, v in self._counts.items() if v)
        parts = sorted(k for k, v in self._parts.items() if v)
        series = sorted(k for k, v in self._series.items() if v)
        if self._pipelined:
            self._commit_pipelined(shard, names, parts, series)
        else:
            self._commit_batch(shard, names, parts, series)

    def _fold_due(self) -> bool:
        """True once every FOLD_EVERY_MINUTES per process: this transaction folds old
        minutes' shards and prunes minutes past the retention (see migration 0007)."""
        store = self._store
        if self._minute - store.series_folded < FOLD_EVERY_MINUTES:
            return False
        store.series_folded = self._minute
        return True

    def _commit_pipelined(self, shard: int, names: list[str], parts: list[int],
                          series: list[str]) -> None:
        """One prepared statement and COMMIT, sent together when the pipeline ends."""
        if names or parts:
            self.conn.execute(self._q.add_counts, {
                "shard": shard, "names": [_checked_name(n) for n in names],
                "values": [int(self._counts[n]) for n in names],
                "minute": self._minute, "series": series,
                "series_values": [int(self._series[n]) for n in series],
                "pids": [int(p) for p in parts], "sizes": [int(self._parts[p]) for p in parts]})
        if series and self._fold_due():
            self.conn.execute(self._q.fold_minutes, {"before": self._minute - FOLD_AFTER_MINUTES})
            self.conn.execute(self._q.prune_minutes,
                              {"expired": self._minute - SERIES_RETENTION_MINUTES})
        self.conn.execute("COMMIT")

    def _commit_batch(self, shard: int, names: list[str], parts: list[int],
                      series: list[str]) -> None:
        """The statements carry only integers and counter names from a fixed list, written
        as literals: a parameterless batch travels in one message."""
        batch = []
        if names:
            rows = ", ".join(f"('{_checked_name(n)}', {shard}, {int(self._counts[n])})"
                             for n in names)
            if series:
                minute = int(self._minute)
                minute_rows = ", ".join(f"({minute}, '{_checked_name(n)}', {shard}, "
                                        f"{int(self._series[n])})" for n in series)
                batch.append(self._q.add_counters_minutes_literal.format(
                    rows=rows, minute_rows=minute_rows))
            else:
                batch.append(self._q.add_counters_literal.format(rows=rows))
        if parts:
            rows = ", ".join(f"({int(p)}, {shard}, {int(self._parts[p])})" for p in parts)
            batch.append(self._q.add_partition_counts_literal.format(rows=rows))
        if series and self._fold_due():
            batch.append(self._q.fold_minutes_literal.format(
                before=int(self._minute) - FOLD_AFTER_MINUTES,
                expired=int(self._minute) - SERIES_RETENTION_MINUTES))
        batch.append("COMMIT")
        self.conn.execute("; ".join(batch))

    # -- StoreTxn -------------------------------------------------------------------------

    def set_settings(self, values: dict[str, str]) -> None:
        if values:
            with self.conn.cursor() as cur:
                cur.executemany(self._q.set_setting, list(values.items()))

    def add_settings(self, values: dict[str, str]) -> dict[str, str]:
        """Insert the settings not stored yet in one statement, in a fixed order (so two
        transactions conflict on the same first name and the later one waits for the
        other's COMMIT), then read them all back."""
        names = sorted(values)
        self.conn.execute(self._q.add_settings, (names, [values[n] for n in names]))
        return {str(n): str(v) for n, v in self.conn.execute(self._q.settings).fetchall()}

    def partition_id(self, namespace: str, scope: str) -> int:
        """The partition's id, created if new. Ids learnt here are cached by the store
        only after COMMIT (a rolled-back partition must not be remembered)."""
        key = (namespace, scope)
        pid = self._known_partition(key) or self.partitions.get(key)
        if pid is None:
            self.conn.execute(self._q.add_partition, key)
            row = self.conn.execute(self._q.find_partition, key).fetchone()
            assert row is not None  # inserted or found, under the unique constraint
            pid = self.partitions[key] = int(row[0])
        return pid

    def _params(self, e: NewEntry) -> dict[str, Any]:
        pid = self.partition_id(e.namespace, e.scope)
        return _entry_params(e, pid, self._store.incarnation, self._q.ext is not None)

    def _inserted(self, e: NewEntry, params: dict[str, Any], row: tuple | None) -> int | None:
        """Account for one insert statement's result; the new id, or None when a
        concurrent client's insert of the same key won (the caller retries)."""
        assert row is not None  # the statement always returns one row
        entry_id, del_ids, del_pids, del_sizes, committed, incarnation, partition_ok = row
        self._removed(list(zip(del_ids, del_pids, del_sizes, strict=True)))
        self._committed_entries = int(committed)
        if incarnation != params["inc"] or not partition_ok:
            # The schema was dropped and created again, or an older backup of it restored
            # in place: the partition id was another incarnation's, or is now another
            # partition's. Nothing was inserted; learn the id again and insert again (the
            # check drops the ids the store remembers when either happened).
            self.partitions.clear()
            self._store.check_incarnation(force=True, conn=self.conn)
            return None
        if entry_id is None:
            return None
        pid = params["pid"]
        self.inserted += 1
        self._counts["entries"] += 1
        self._counts["bytes"] += params["size"]
        self._parts[pid] += 1
        return int(entry_id)

    def insert(self, e: NewEntry) -> int:
        """Insert, replacing the entry with the same key; the new id is always larger.
        One statement, one round trip (see ``Queries.insert``)."""
        for _ in range(_INSERT_TRIES):
            params = self._params(e)  # again after a retry: the partition may be new
            row = self.conn.execute(self._q.insert, params).fetchone()
            entry_id = self._inserted(e, params, row)
            if entry_id is not None:
                return entry_id
        raise InvalidInputError(  # pragma: no cover - needs 8 lost races in a row
            f"key {e.key_hash.hex()[:16]}... kept being rewritten by other clients")

    def insert_many(self, entries: Sequence[NewEntry]) -> list[int]:
        """:meth:`insert` for several entries, sent together (psycopg's pipeline: one
        round trip for the batch instead of one per entry). Same results as inserting
        them one by one, in order (a key given twice: the later one replaces the first)."""
        if len(entries) < 2:
            return [self.insert(e) for e in entries]
        if len(entries) > LARGE_BATCH:
            self.unbounded()
        params = [self._params(e) for e in entries]
        ids: list[int] = []
        with self.conn.cursor() as cur:
            cur.executemany(self._q.insert, params, returning=True)
            for e, p in zip(entries, params, strict=True):
                entry_id = self._inserted(e, p, cur.fetchone())
                # Lost a race with another client on this key: redo it alone.
                ids.append(self.insert(e) if entry_id is None else entry_id)
                cur.nextset()
        return ids

    def delete(self, where: EntryFilter) -> list[int]:
        if where.ids is None or len(where.ids) > LARGE_BATCH:
            self.unbounded()  # a filter may select every row
        clause, params = compile_filter(where, mark="%s")
        rows = self.conn.execute(self._q.delete_where.format(where=clause), params).fetchall()
        return self._removed(rows)

    def delete_ids(self, ids: list[int]) -> list[int]:
        return self.delete(EntryFilter(ids=tuple(ids)))

    def delete_summed_sql(self, where: str, params: tuple = ()) -> int:
        """Delete by a fixed WHERE clause of semcache's own (values bound), counted in SQL."""
        rows = self.conn.execute(self._q.delete_summed.format(where=where), params).fetchall()
        return self._removed_summed(rows)

    def added_summed(self, rows: list[tuple[int, int, int]]) -> None:
        """Account for (partition_id, count, bytes) of rows inserted in bulk."""
        for pid, count, size in rows:
            self.inserted += int(count)
            self._counts["entries"] += int(count)
            self._counts["bytes"] += int(size)
            self._parts[int(pid)] += int(count)

    def clear_all(self) -> int:
        self.unbounded()
        return self.delete_summed_sql("true")

    def purge_expired(self, now: float) -> int:
        """Delete expired entries; rows another client holds are left for a later purge
        (they are never served: lookups check the expiry). Bounded by the statement
        timeout: puts purge when the cache is full."""
        return self.delete_summed_sql(self._q.expired_ids, (now,))

    def evict_lru(self, count: int) -> int:
        """Delete the ``count`` least recently accessed entries, this transaction's pending
        hits counted in (rows another client is writing right now are skipped, not waited
        for)."""
        if count <= 0:
            return 0
        ids = sorted(self._access)
        times = [self._access[i].accessed_at for i in ids]
        return self.delete_summed_sql(self._q.lru_ids, (count + len(ids), ids, times, count))

    def entry_count(self) -> int:
        """Entries committed by everyone, plus this transaction's own inserts/deletes.
        An insert of this transaction already read the committed count (no round trip)."""
        if self._committed_entries is None:
            row = self.conn.execute(self._q.entry_count).fetchone()
            self._committed_entries = int(row[0] if row else 0)
        return self._committed_entries + self._counts.get("entries", 0)

    def entry_bytes(self) -> int:
        """The committed byte total plus this transaction's own changes, read under an
        advisory lock held to COMMIT: every writer that enforces ``max_bytes`` sees the
        others' totals (counts are added to the shards just before COMMIT)."""
        if not self._bytes_locked:
            self.conn.execute(self._q.bytes_lock)
            self._bytes_locked = True
        row = self.conn.execute(self._q.entry_bytes).fetchone()
        return int(row[0] if row else 0) + self._counts.get("bytes", 0)

    def evict_bytes(self, amount: int) -> int:
        """Delete least recently accessed entries (pending hits counted in, rows another
        client holds skipped) until ``amount`` bytes are freed or none is left."""
        ids = sorted(self._access)
        times = [self._access[i].accessed_at for i in ids]
        evicted = 0
        batch = 16
        while amount > 0:
            rows = self.conn.execute(self._q.lru_sizes, (batch + len(ids), ids, times)).fetchall()
            chosen = []
            for entry_id, size in rows:
                if amount <= 0:
                    break
                chosen.append(int(entry_id))
                amount -= int(size)
            if not chosen:
                break
            evicted += self.delete_summed_sql("e.id = ANY(%s)", (chosen,))
            batch *= 4
        return evicted

    def record_verdict(self, v: Verdict) -> None:
        self.conn.execute(self._q.record_verdict, (
            v.entry_id, v.namespace, v.query_hash, v.kind, v.similarity, bool(v.correct),
            v.created_at))

    def restore_verdicts(self, verdicts: Sequence[Verdict]) -> None:
        if not verdicts:
            return
        with self.conn.cursor() as cur:
            cur.executemany(self._q.restore_verdict, [
                {"entry": v.entry_id, "ns": v.namespace, "query": v.query_hash,
                 "kind": v.kind, "sim": v.similarity, "correct": bool(v.correct),
                 "at": v.created_at} for v in verdicts])

    def record_outcomes(self, outcomes: Sequence[Outcome], pool: bool = True) -> None:
        outcome_sql.record_outcomes(self.conn, self._q.outcomes, outcomes, pool)

    def restore_pools(self, namespace: str, pools: Sequence[OutcomePool]) -> None:
        outcome_sql.restore_pools(self.conn, self._q.outcomes, namespace, pools)

    def apply_access(self, updates: dict[int, AccessUpdate]) -> None:
        """Batched hits: access time (never moved back), hit counts, and expiry pushed out
        by refresh-on-access (never moved backwards).

        Written at the end of the transaction (:meth:`finish`), never waiting for a row
        another client holds. Usage rows are also locked by deleting their entry (the
        foreign key's cascade): a transaction that touched usage rows first and then
        replaced an entry could wait for one that did the same in the other order - a
        deadlock. Touched last and with SKIP LOCKED, a flush waits for nobody. A row held
        by another client is being deleted (nothing to update) or flushed by another
        process at the same moment (which moves its access time and expiry forward too;
        this flush's increments of its hit count are lost). LRU eviction in the same
        transaction counts these pending hits in (:meth:`evict_lru`)."""
        for entry_id, u in updates.items():
            mine = self._access.get(entry_id)
            if mine is None:
                self._access[entry_id] = AccessUpdate(u.accessed_at, u.hits, u.expires_at)
                continue
            mine.accessed_at = max(mine.accessed_at, u.accessed_at)
            mine.hits += u.hits
            if u.expires_at is not None:
                mine.expires_at = max(mine.expires_at or u.expires_at, u.expires_at)

    def _write_access(self) -> None:
        """Apply the pending hits (see :meth:`apply_access`). No expiry moves are reported
        anywhere else: nothing mirrors a PostgreSQL cache."""
        order = sorted(self._access)
        access = self._access
        self.conn.execute(self._q.touch, {
            "ids": order, "at": [access[i].accessed_at for i in order],
            "hits": [access[i].hits for i in order]})
        refreshed = [i for i in order if access[i].expires_at is not None]
        if refreshed:
            self.conn.execute(self._q.refresh, {
                "ids": refreshed, "until": [access[i].expires_at for i in refreshed]})

    def add_counters(self, deltas: dict[str, int], at: float | None = None) -> None:
        """Counts added to the shared counters and to the minute ``at`` (None: now) at
        COMMIT (:meth:`finish`)."""
        unknown = set(deltas) - COUNTER_NAMES
        if unknown:
            raise InvalidInputError(f"unknown counters {sorted(unknown)}; expected some of "
                                    f"{sorted(COUNTER_NAMES)}")
        for name, value in deltas.items():
            self._counts[name] += int(value)
            self._series[name] += int(value)
        if any(deltas.values()):
            self._minute = int((time.time() if at is None else at) // 60)


__all__ = ["COUNTER_NAMES", "FOLD_AFTER_MINUTES", "FOLD_EVERY_MINUTES", "PgWriteTxn",
           "put_alone"]
