"""The PostgreSQL storage engine: one cache = one schema, shared by every host.

Reads are single statements on pooled autocommit connections (each sees the latest commit of
every client). Writes are one explicit transaction each (:meth:`PostgresStore.write`);
a write that returned is committed, with ``synchronous_commit`` on. Correctness never relies
on a process-local lock: PostgreSQL's row locks and unique constraints serialize what must
be serialized (see :mod:`semcache.store.postgres.txn`), so any number of processes on any
number of hosts may write at once.

Semantic search runs in the server (:meth:`PostgresStore.nearest`): the ``k`` nearest codes
by Hamming distance within the partition and unexpired - through pgvector's HNSW index on
``bit(256)`` for large partitions, or an exact ``bit_count(code # q)`` scan for small ones
or without pgvector - rescored by exact cosine on the stored vectors.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from semcache.errors import CacheFileError, ConfigurationError, ReadOnlyCacheError
from semcache.store.base import (
    EntryFilter,
    EntryOrder,
    EntryRecord,
    EntryRow,
    NamespaceSummary,
    Neighbours,
    NewEntry,
    Outcome,
    OutcomePool,
    VacuumProgress,
    Verdict,
    accept_incarnation,
)
from semcache.store.filters import compile_filter, order_sql
from semcache.store.postgres import admin, bulk
from semcache.store.postgres import outcomes as outcome_sql
from semcache.store.postgres.adapters import code_literal, register_vector, vector_from
from semcache.store.postgres.claims import Claims
from semcache.store.postgres.conninfo import (
    URL_OPTIONS,
    ConnInfo,
    check_seconds,
    local_socket,
    parse,
    translate,
    with_url_options,
)
from semcache.store.postgres.hnsw import HnswRows
from semcache.store.postgres.lock import ProcessLock
from semcache.store.postgres.partitions import RememberedPartitions
from semcache.store.postgres.pool import Connections
from semcache.store.postgres.queries import BEGIN, RECORD_COLUMNS, Queries
from semcache.store.postgres.schema import SchemaState, drop_new_schema, ensure_schema
from semcache.store.postgres.txn import PgWriteTxn, put_alone
from semcache.store.rescore import DamagedVectors, ranked, rescore

log = logging.getLogger("semcache")

#: Partitions with at most this many entries are searched by an exact scan, larger ones
#: through the HNSW index (see docs/scale-out.md for the measurements behind it).
EXACT_SCAN_BELOW = 5_000
#: HNSW candidates examined per search (pgvector's hnsw.ef_search; at least k). 100, not
#: pgvector's 40: at 100k entries 40 lost 12 of 639 paraphrase hits that the exact scan
#: finds, 64 lost 4, 100 lost 2, 400 none (docs/scale-out.md has the figures).
EF_SEARCH = 100
#: pgvector >= 0.8: keep scanning the graph when the partition / expiry filter rejects
#: candidates ("off" returns fewer than k rows then; see docs/scale-out.md).
ITERATIVE_SCAN = "relaxed_order"

_COUNTERS = ("hits", "exact_hits", "semantic_hits", "misses", "puts", "evictions",
             "expirations", "tokens_saved", "entries", "bytes", "guard_rejections",
             "feedback_right", "feedback_wrong", "damaged_vectors", "explorations",
             "outcomes_right", "outcomes_wrong")


class PostgresStore:
    """Storage engine over one PostgreSQL schema (docs/schema.md, PostgreSQL section).

    ``url``: ``postgresql://`` / ``postgres://`` URL or libpq ``key=value`` string; a URL
    may end in ``?schema=NAME``. ``schema``: the cache's schema (default ``semcache``).
    ``pgvector``: None = use it when installed or creatable, False = never (exact scans,
    bytea vectors), True = required. Pool: ``pool_min_size`` / ``pool_max_size``
    connections per process, ``pool_timeout`` seconds to wait for a free one.
    ``connect_timeout``: seconds to reach the server; ``statement_timeout``: seconds a
    statement of a get or a put may take (0: no limit): the server cancels it a little
    earlier, and a server that has not answered by then is taken for down (see
    :mod:`.pool`). ``pipeline``: write transactions in
    psycopg's pipeline mode (None = over TCP yes, over a Unix socket no).
    ``synchronous_commit``: True (default) - a put that returned is on the server's disk;
    False - opt-in relaxed durability: a commit returns before its WAL is flushed, so a
    server crash (not a client's) may lose the puts of the last ~3 ``wal_writer_delay``
    (docs/scale-out.md, Durability). A URL may set
    the same options in its query string (``?pool_max_size=16&ef_search=64``; see
    :data:`~semcache.store.postgres.conninfo.URL_OPTIONS`), so that ``semcache.open(url)``
    reaches them.
    """

    engine = "postgresql"

    def __init__(self, url: str, *, readonly: bool = False, schema: str | None = None,
                 pgvector: bool | None = None, pool_min_size: int = 1, pool_max_size: int = 8,
                 pool_timeout: float = 10.0, connect_timeout: float = 2.0,
                 statement_timeout: float = 2.0,
                 exact_scan_below: int = EXACT_SCAN_BELOW, ef_search: int = EF_SEARCH,
                 iterative_scan: str = ITERATIVE_SCAN, pipeline: bool | None = None,
                 synchronous_commit: bool = True) -> None:
        self.info: ConnInfo = parse(url, schema)
        self.location = self.path = self.info.location
        self.schema = self.info.schema
        self.readonly = readonly
        self._lock = ProcessLock(self.location)
        self._damaged = DamagedVectors(self.location)
        #: Per thread: whether its last :meth:`nearest` came back with rows (its statement
        #: then saw this process's incarnation token; see :meth:`check_incarnation`).
        self._searched = threading.local()
        #: Minute this process last folded and pruned counter_minutes (see PgWriteTxn).
        self.series_folded = 0
        self.commits_seen = 0  # see Store.commits_seen
        o = with_url_options({
            "pgvector": pgvector, "pool_min_size": pool_min_size,
            "pool_max_size": pool_max_size, "pool_timeout": pool_timeout,
            "exact_scan_below": exact_scan_below, "ef_search": ef_search,
            "iterative_scan": iterative_scan, "pipeline": pipeline,
            "connect_timeout": connect_timeout, "statement_timeout": statement_timeout,
            "synchronous_commit": synchronous_commit}, _DEFAULTS, self.info)
        if not isinstance(o["synchronous_commit"], bool):
            raise ConfigurationError("synchronous_commit must be True or False (on / off in "
                                     f"a URL); got {o['synchronous_commit']!r}")
        #: False: commits do not wait for the WAL flush (see the class docstring).
        self.synchronous_commit = o["synchronous_commit"]
        pgvector, ef_search, iterative_scan, pipeline = (
            o["pgvector"], o["ef_search"], o["iterative_scan"], o["pipeline"])
        self.exact_scan_below = int(o["exact_scan_below"])
        check_seconds("connect_timeout", o["connect_timeout"], zero=False)
        check_seconds("statement_timeout", o["statement_timeout"], zero=True)
        if not isinstance(ef_search, int) or isinstance(ef_search, bool) or \
                not 1 <= ef_search <= 1000:
            raise ConfigurationError(f"ef_search must be an int in 1..1000; got {ef_search!r}")
        if iterative_scan not in ("off", "relaxed_order", "strict_order"):
            raise ConfigurationError("iterative_scan must be 'off', 'relaxed_order' or "
                                     f"'strict_order'; got {iterative_scan!r}")
        self.ef_search = ef_search
        self.iterative_scan = iterative_scan
        #: Write transactions in psycopg's pipeline mode (one round trip fewer per write,
        #: some client CPU more): worth it over a network, not over a local socket.
        self.pipeline = (not local_socket(self.info.params)) if pipeline is None \
            else bool(pipeline)
        self._partitions = RememberedPartitions()
        self._conns = Connections(self.info, configure=self._configure,
                                  min_size=o["pool_min_size"], max_size=o["pool_max_size"],
                                  timeout=o["pool_timeout"],
                                  connect_timeout=o["connect_timeout"],
                                  statement_timeout=o["statement_timeout"])
        #: How HNSW searches run (the plain first batch, then the iterative scan).
        self.hnsw_rows = HnswRows(self._conns, ef_search, iterative_scan)
        with self._conns.connect() as conn:
            if conn.info.server_version < 140000:  # bit_count(), MATERIALIZED CTEs
                raise CacheFileError(
                    f"{self.location}: semcache needs PostgreSQL 14 or newer; the server is "
                    f"{conn.info.server_version // 10000}")
            try:
                self.state: SchemaState
                self.state, self._created = ensure_schema(conn, self.info, readonly=readonly,
                                                          pgvector=pgvector)
                self.queries = Queries(self.schema, self.state.ext_schema)
                #: ANALYZE of a cache filled quickly (its HNSW index used at once).
                self.statistics = admin.PlannerStatistics(self._conns, self.queries,
                                                          EXACT_SCAN_BELOW)
                self._claims = Claims(self._conns, self.queries, readonly)
                self.settings: dict[str, str] = dict(conn.execute(self.queries.settings).fetchall())
                self.incarnation: str | None = self.settings.get("incarnation")
                self.on_incarnation: Callable[[], None] | None = None
                version = conn.execute("SHOW server_version").fetchone()
                self.server_version = str(version[0]) if version else "?"
                sync = conn.execute("SHOW synchronous_commit").fetchone()
                # A put that returned is on disk: where the default is off, semcache turns
                # it on for its own transactions (stronger settings are kept), unless the
                # user opted out.
                relax = "off" if not self.synchronous_commit else \
                    "on" if sync and sync[0] == "off" else None
                self._begin = BEGIN + ((f"SET LOCAL synchronous_commit = {relax}",)
                                       if relax else ())
                self._vector_oid = self._lookup_vector_oid(conn)
            except psycopg.Error as exc:
                raise translate(exc, self.info) from None
        self._conns.start()

    @property
    def lock(self) -> ProcessLock:
        """The engine's StoreLock (this process only: the server serializes writers)."""
        return self._lock

    @property
    def created(self) -> bool:
        """True when this open created the cache (a failed open then removes it)."""
        return self._created is not None

    def drop(self, *, if_empty: bool = False) -> None:
        """Close, and remove the cache: its schema, or only semcache's tables when the
        schema holds anything else or existed before this open (see
        :func:`~semcache.store.postgres.schema.drop_new_schema`). ``if_empty``: only while
        it has no entries (a failed open: another client may have started using it)."""
        self.close()
        conn = self._conns.connect()
        try:
            if drop_new_schema(conn, self.info, self._created, require_empty=if_empty):
                log.info("semcache: removed schema %s of %s", self.schema, self.location)
        except psycopg.Error as exc:
            if not if_empty:
                raise translate(exc, self.info) from None
            log.warning("semcache: could not remove the half-made schema %s of %s: %s",
                        self.schema, self.location, translate(exc, self.info))
        finally:
            conn.close()
        self._created = None

    # -- connections -----------------------------------------------------------------

    def _lookup_vector_oid(self, conn: psycopg.Connection) -> int | None:
        if self.queries.ext is None:
            return None
        row = conn.execute("SELECT to_regtype(%s)::oid", (f"{self.queries.ext}.vector",)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    @property
    def connections(self) -> Connections:
        """This process's pooled connections (maintenance code runs statements on them)."""
        return self._conns

    def bulk_insert(self, entries: Iterable[NewEntry], *, defer_index: bool = False) -> int:
        """Insert many entries in one transaction by binary COPY (see :mod:`.bulk`);
        ``defer_index``: drop the HNSW index for the load and build it once afterwards."""
        if self.readonly:
            raise ReadOnlyCacheError(f"cache {self.location} is opened read-only")
        dropped = defer_index and self.state.hnsw
        with self.write(pipelined=False) as txn:  # COPY cannot run in pipeline mode
            n = bulk.load(txn, self.queries, entries,
                          self._vector_oid if self.queries.ext else None, drop_index=dropped)
        if dropped:
            self._rebuild_hnsw()
        return n

    def _rebuild_hnsw(self) -> None:
        from dataclasses import replace

        bulk.rebuild_search_index(self._conns, self.queries, self.info)
        self.state = replace(self.state, hnsw=True)

    @property
    def hnsw(self) -> bool:
        """True when searches may use the HNSW index (pgvector present, index valid)."""
        return self.state.hnsw and self.queries.search_hnsw is not None

    @property
    def _batch_first(self) -> bool:
        """True when HNSW searches run without the iterative scan first (.hnsw.HnswRows)."""
        return self.iterative_scan != "off" and _at_least(self.state.pgvector_version, (0, 8))

    def _configure(self, conn: psycopg.Connection) -> None:
        """Per connection: pgvector's type, search settings, read-only mode."""
        if self._vector_oid is not None:
            register_vector(conn, self._vector_oid)
        sets = []
        if self.hnsw:
            sets.append(f"SET hnsw.ef_search = {int(self.ef_search)}")
            if _at_least(self.state.pgvector_version, (0, 8)):
                # Filtered searches (partition, expiry) keep walking the graph until k
                # rows pass the filter instead of returning fewer - in a transaction of
                # their own when the plain first batch came back short (.hnsw.HnswRows).
                mode = "off" if self._batch_first else self.iterative_scan
                sets.append(f"SET hnsw.iterative_scan = {mode}")
        if self.readonly:
            sets.append("SET default_transaction_read_only = on")
        else:
            # Puts written as one autocommit statement (put_alone) get what BEGIN sets.
            sets += [s.replace("LOCAL ", "") for s in self._begin[1:]]
        conn.execute("; ".join(sets))

    def close(self) -> None:
        self._conns.close()

    # -- reads on the lookup path ------------------------------------------------------

    def get_by_key(self, key_hash: bytes) -> EntryRow | None:
        self._searched.current = False  # an exact lookup's check is never skipped
        q = self.queries.by_key
        row = self._conns.run(lambda c: c.execute(q, (key_hash,), binary=True).fetchone())
        return None if row is None else EntryRow(*row)

    def get_by_ids(self, ids: Sequence[int], *, with_vector: bool = False) -> list[EntryRow]:
        if not ids:
            return []
        q = self.queries.by_ids.format(vec=", e.vector" if with_vector else "")
        rows = self._conns.run(
            lambda c: c.execute(q, ([int(i) for i in ids],), binary=True).fetchall())
        return [EntryRow(*r) for r in rows]

    def check_incarnation(self, force: bool = False, conn: Any = None) -> bool:
        """See :meth:`Store.check_incarnation`; one round trip when ``force`` (on ``conn``,
        a write transaction's connection, when given)."""
        if not force:
            return False
        if conn is None and getattr(self._searched, "current", False):
            # This thread's search just returned rows, so its statement's own token check
            # passed: the miss that follows needs no round trip of its own to rule out a
            # replaced schema (the next search checks the token again). One use only.
            self._searched.current = False
            return False
        partitions, q = self._partitions, self.queries
        settings, stale = partitions.read_state(conn, q) if conn is not None else \
            self._conns.run(lambda c: partitions.read_state(c, q))
        if settings.get("incarnation") == self.incarnation:
            if not stale:
                return False
            # An older backup of this schema restored in place (same token): ids of
            # partitions created after the backup were given to other partitions.
            log.warning("semcache: schema %s of %s holds other partitions under ids this "
                        "process remembered (%s; an older backup restored in place?); "
                        "remembered ids are dropped", self.schema, self.location,
                        ", ".join(map(str, stale[:10])))
        else:
            log.warning("semcache: schema %s of %s was dropped and created again (incarnation"
                        " %s -> %s); ids remembered by this process are dropped", self.schema,
                        self.location, self.incarnation, settings.get("incarnation"))
        partitions.forget()
        self.hnsw_rows.forget()
        accept_incarnation(self, settings.get("incarnation"), settings)
        return True

    def find_partition(self, namespace: str, scope: str) -> int | None:
        key = (namespace, scope)
        pid = self._partitions.get(key)
        if pid is None:
            q = self.queries.find_partition
            row = self._conns.run(lambda c: c.execute(q, key).fetchone())
            if row is not None:
                # Partitions are never deleted; the statements that use a remembered id
                # check that it still names this partition (a restored older backup).
                pid = int(row[0])
                self._partitions.learn(key, pid)
        return pid

    def partition_size(self, partition_id: int) -> int:
        """Entries in a partition (expired ones included), cached for a few seconds."""
        q = self.queries.partition_size

        def read() -> int:
            row = self._conns.run(lambda c: c.execute(q, (partition_id,)).fetchone())
            return int(row[0]) if row else 0

        return self._partitions.size(partition_id, read)

    def search_plan(self, partition_id: int) -> str:
        """``"hnsw"`` or ``"exact"``: how :meth:`nearest` will search this partition."""
        if not self.hnsw or self.partition_size(partition_id) <= self.exact_scan_below:
            return "exact"
        return "hnsw"

    def nearest(self, vector: np.ndarray, code: bytes, partition_id: int, now: float, k: int,
                min_cosine: float | None = None, checked: bool = False) -> Neighbours:
        """The ``k`` nearest unexpired codes of the partition (one statement), rescored by
        exact cosine with ``vector`` (unit float32): in SQL with pgvector, else here."""
        names = self._partitions.names(partition_id)
        if names is None:  # an id this process did not learn: take its partition as it is
            row = self._conns.run(lambda c: c.execute(self.queries.partition_names,
                                                      ([partition_id],)).fetchone())
            names = ("", "") if row is None else (str(row[1]), str(row[2]))
        params: dict[str, Any] = {"p": partition_id, "ns": names[0], "scope": names[1],
                                  "now": now, "code": code_literal(code),
                                  "inc": self.incarnation}
        q = self.queries
        if q.ext is None:
            sql = q.search("exact", k)
            rows = self._conns.run(lambda c: c.execute(sql, params, binary=True).fetchall())
            self._searched.current = bool(rows)
            return rescore([EntryRow(*r) for r in rows], vector, self._damaged)
        params["q"] = vector_from(vector)
        params["dim"] = int(vector.shape[0])
        plan = self.search_plan(partition_id)
        sql = q.search(plan, k)
        if plan == "hnsw" and self._batch_first:
            rows = self.hnsw_rows.rows(sql, params, partition_id, k)
        else:
            rows = self._conns.run(lambda c: c.execute(sql, params, binary=True).fetchall())
        self._searched.current = bool(rows)
        return ranked([(EntryRow(*r[:12]), r[12]) for r in rows], self._damaged)

    def blocked_entries(self, query_hash: bytes) -> set[int]:
        return {int(r[0]) for r in self._rows(self.queries.blocked, (query_hash,))}

    def counters(self) -> dict[str, int]:
        q = self.queries.counters
        rows = self._conns.run(lambda c: c.execute(q).fetchall())
        out = dict.fromkeys(_COUNTERS, 0)
        out.update({str(n): int(v) for n, v in rows})
        return out

    # -- writes -------------------------------------------------------------------------

    @contextmanager
    def write(self, timeout: float | None = None, *,
              pipelined: bool | None = None) -> Iterator[PgWriteTxn]:
        """One transaction: all of it commits, or none. ``timeout``: seconds to wait for
        row locks held by other clients (None: wait). ``pipelined`` (psycopg's pipeline
        mode; default: the store's ``pipeline``): BEGIN travels with the first statement,
        the counters with COMMIT - a put is two round trips instead of three; COPY needs
        it off."""
        if self.readonly:
            raise ReadOnlyCacheError(f"cache {self.location} is opened read-only")
        if pipelined is None:
            pipelined = self.pipeline
        begin = list(self._begin)
        if timeout is not None:
            begin.append(f"SET LOCAL lock_timeout = {max(1, int(timeout * 1000))}")
        with self._conns.transaction(begin, pipelined=pipelined) as conn:
            txn = PgWriteTxn(conn, self.queries, self._partitions.get, self,
                             pipelined=pipelined)
            yield txn
            txn.finish()  # counters and COMMIT
        for key, pid in txn.partitions.items():
            self._partitions.learn(key, pid)
        self.statistics.inserted(txn.inserted)

    def put_alone(self, e: NewEntry, max_entries: int | None, now: float) -> int | None:
        """A put with nothing else to write, as one statement (one round trip instead of
        three; see :func:`.txn.put_alone`): its id once committed, or None when the
        caller must write it in a transaction (:meth:`write`)."""
        pid = self._partitions.get((e.namespace, e.scope))
        if self.readonly or pid is None:
            return None
        entry_id = self._conns.run(
            lambda c: put_alone(c, self.queries, self, e, pid, max_entries, now))
        if entry_id is not None:
            self.statistics.inserted(1)
        return entry_id

    # -- coalescing claims --------------------------------------------------------------

    def claim(self, key_hash: bytes, lease: float) -> bool:
        return self._claims.claim(key_hash, lease)

    def release(self, key_hash: bytes) -> None:
        self._claims.release(key_hash)

    def read_settings(self) -> dict[str, str]:
        q = self.queries.settings
        rows = self._conns.run(lambda c: c.execute(q).fetchall())
        self.settings = {str(n): str(v) for n, v in rows}
        return self.settings

    def write_settings(self, values: dict[str, str]) -> None:
        with self.write() as txn:
            txn.set_settings(values)
        self.settings.update(values)

    def pin_settings(self, values: dict[str, str]) -> dict[str, str]:
        """One transaction: a concurrent first open's insert of the same names makes ours
        wait for its COMMIT and then do nothing, so every open reads the winner's."""
        with self.write(pipelined=False) as txn:
            stored = txn.add_settings(values)
        self.settings = dict(stored)
        return dict(stored)

    # -- admin reads --------------------------------------------------------------------

    def _rows(self, sql: str, params: Any = (), *, scan: bool = False) -> list[tuple]:
        return admin.read_rows(self._conns, sql, params, scan=scan)

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
            "GROUP BY e.namespace ORDER BY count(*) DESC, e.namespace", (now,), scan=True)
        return [NamespaceSummary(str(n), int(a), int(b), int(c), int(d))
                for n, a, b, c, d in rows]

    def verdicts(self, namespace: str | None = None) -> list[Verdict]:
        where, params = ("WHERE namespace = %s", (namespace,)) if namespace is not None \
            else ("", ())
        return [Verdict(int(r[0]), str(r[1]), None if r[2] is None else bytes(r[2]), str(r[3]),
                        float(r[4]), bool(r[5]), float(r[6]))
                for r in self._rows(self.queries.verdicts.format(where=where), params)]

    def entry_outcomes(self, entry_id: int) -> list[Outcome]:
        return outcome_sql.entry_outcomes(self._rows, self.queries.outcomes, entry_id)

    def outcomes(self, namespace: str | None = None) -> list[Outcome]:
        return outcome_sql.outcomes(self._rows, self.queries.outcomes, namespace)

    def outcome_pools(self, namespace: str) -> list[OutcomePool]:
        return outcome_sql.outcome_pools(self._rows, self.queries.outcomes, namespace)

    def partitions(self, namespace: str) -> list[tuple[int, str]]:
        rows = self._rows(f"SELECT id, scope FROM {self.queries.t['partitions']} "
                          "WHERE namespace = %s ORDER BY id", (namespace,))
        return [(int(i), str(s)) for i, s in rows]

    def counter_history(self, since_minute: int, step: int) -> list[tuple[int, str, int]]:
        rows = self._rows(self.queries.counter_history,
                          {"step": int(step), "since": int(since_minute)})
        return [(int(m), str(n), int(v)) for m, n, v in rows]

    def size_bytes(self) -> int:
        """Bytes of the schema's tables, their indexes and TOAST data on the server."""
        rows = self._rows(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')", (self.schema,))
        return int(rows[0][0])

    # -- upkeep and maintenance -----------------------------------------------------------

    @property
    def upkeep_due(self) -> bool:
        """Never: the server keeps its indexes itself."""
        return False

    def upkeep(self) -> None:
        """Nothing deferred: the server keeps its indexes itself."""

    def warmup(self) -> None:
        """Nothing to map: the server holds the index."""

    def check(self, *, quick: bool = False) -> tuple[dict[str, Any], list[str]]:
        """Schema, index, counters and rows (see :func:`.admin.check`)."""
        report, problems = admin.check(self._conns, self.queries, self.info, self.settings,
                                       self.server_version, quick=quick)
        return {"database": report}, problems

    def vacuum(self, progress: VacuumProgress | None = None) -> dict[str, int]:
        """Recount entries/bytes/partition sizes from the rows (after hand-made changes
        that bypassed the triggers), rebuild a missing HNSW index, VACUUM ANALYZE."""
        if self.readonly:
            raise ReadOnlyCacheError(f"cache {self.location} is opened read-only")
        tell = progress or (lambda step, done, steps: None)
        tell("recounting entries and bytes", 0, 3)
        drift = admin.recount(self._conns, self.queries, self.info)
        rebuilt = bool(self.state.ext_schema) and not self.state.hnsw
        tell("rebuilding the HNSW index" if rebuilt else "checking the HNSW index", 1, 3)
        if rebuilt:
            self._rebuild_hnsw()
        tell("VACUUM ANALYZE", 2, 3)
        admin.analyze(self._conns, self.queries, self.info)
        tell("done", 3, 3)
        return {"counter_drift": drift, "hnsw_rebuilt": int(rebuilt)}


#: Defaults of the options a URL may set (an explicit argument must agree with the URL).
_DEFAULTS = {name: p.default for name, p in
             inspect.signature(PostgresStore.__init__).parameters.items() if name in URL_OPTIONS}


def _at_least(version: str | None, wanted: tuple[int, int]) -> bool:
    if not version:
        return False
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return parts >= wanted


if TYPE_CHECKING:  # mypy checks that the engine implements the interface
    from semcache.store.base import Store, StoreTxn

    def _conforms(store: PostgresStore, txn: PgWriteTxn) -> tuple[Store, StoreTxn]:
        return store, txn


__all__ = ["EF_SEARCH", "EXACT_SCAN_BELOW", "PostgresStore", "ProcessLock"]
