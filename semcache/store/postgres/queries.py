"""Every statement of the PostgreSQL engine, made concrete once per store.

Table names are qualified with the cache's schema (quoted with ``psycopg.sql``), pgvector's
types and operators with pgvector's schema, so nothing depends on ``search_path`` (which a
transaction-mode pooler such as PgBouncer does not keep).
"""

from __future__ import annotations

from psycopg import sql

from semcache.store.postgres.outcomes import OutcomeQueries
from semcache.store.postgres.schema import lock_key

#: Shards of the counters (see the first migration).
SHARDS = 64
#: First key of the advisory lock that serializes writers enforcing ``max_bytes``, from
#: the read of the byte total to COMMIT ("SEMB"; the second key is the schema's CRC).
BYTES_LOCK_CLASS = 0x53454D42
#: First key of the try-lock under which one client at a time refreshes the planner's
#: statistics of the entries table ("SEMS"; admin.PlannerStatistics).
STATISTICS_LOCK_CLASS = 0x53454D53

#: Columns of EntryRow, in order (``e`` = entries, ``u`` = entry_usage).
ROW_COLUMNS = ("e.id, e.namespace, e.partition_id, e.prompt, e.response, e.metadata, "
               "e.tokens, e.created_at, u.accessed_at, e.expires_at, e.ttl, u.hits")
#: Columns of EntryRecord, in order (``p`` = partitions).
RECORD_COLUMNS = ("e.id, e.key_hash, e.namespace, p.scope, e.prompt, e.response, e.metadata, "
                  "e.tokens, e.size, e.created_at, e.accessed_at, e.expires_at, e.ttl, e.hits, "
                  "e.code IS NOT NULL, {vector}, e.key_material")
#: What every write transaction starts with: the flag that tells the hand-made-change
#: trigger to stay out (semcache counts its own changes). Utility statements: nothing to
#: plan. (:meth:`PostgresStore.write` adds ``SET LOCAL synchronous_commit = on`` where the
#: server's default is ``off``: a put that returned is on disk.)
BEGIN = ("BEGIN", "SET LOCAL semcache.app = 'on'")


class Queries:
    """SQL text of one cache schema (``schema``) and vector layout (``ext``: pgvector's
    schema, or None when vectors are bytea)."""

    def __init__(self, schema: str, ext: str | None) -> None:
        s = sql.Identifier(schema).as_string(None)
        self.schema = s
        self.ext = sql.Identifier(ext).as_string(None) if ext else None
        self.t = {name: f"{s}.{name}" for name in (
            "entries", "entry_usage", "partitions", "settings", "counters", "partition_counts",
            "schema_migrations", "feedback", "claims", "counter_minutes", "outcomes",
            "outcome_pools")}
        t = self.t
        joined = f"{t['entries']} e JOIN {t['entry_usage']} u ON u.entry_id = e.id"
        self.joined = joined
        # Admin reads see entries with their usage columns as one relation ``e`` (the
        # shared filter compiler and orders name e.hits, e.accessed_at).
        self.with_parts = (f"(SELECT e.*, u.accessed_at, u.hits FROM {joined}) e "
                           f"JOIN {t['partitions']} p ON p.id = e.partition_id")
        self.by_key = f"SELECT {ROW_COLUMNS} FROM {joined} WHERE e.key_hash = %s"
        self.by_ids = f"SELECT {ROW_COLUMNS}{{vec}} FROM {joined} WHERE e.id = ANY(%s) ORDER BY e.id"
        self.find_partition = f"SELECT id FROM {t['partitions']} WHERE namespace = %s AND scope = %s"
        # The planner's row count of entries (reltuples: -1 before the first ANALYZE) and
        # the committed count (admin.PlannerStatistics).
        self.planner_rows = (
            "SELECT (SELECT reltuples FROM pg_class WHERE oid = "
            f"'{t['entries'].replace(chr(39), chr(39) * 2)}'::regclass), "
            f"(SELECT coalesce(sum(value), 0)::bigint FROM {t['counters']} "
            "WHERE name = 'entries')")
        self.statistics_lock = (f"SELECT pg_try_advisory_xact_lock({STATISTICS_LOCK_CLASS}, "
                                f"{lock_key(schema)})")
        self.partition_names = (f"SELECT id, namespace, scope FROM {t['partitions']} "
                                "WHERE id = ANY(%s::integer[])")
        self.add_partition = (f"INSERT INTO {t['partitions']} (namespace, scope) VALUES (%s, %s) "
                              "ON CONFLICT (namespace, scope) DO NOTHING")
        self.counters = f"SELECT name, sum(value)::bigint FROM {t['counters']} GROUP BY name"
        self.counter_history = (
            f"SELECT (minute / %(step)s::bigint) * %(step)s::bigint, name, sum(value)::bigint "
            f"FROM {t['counter_minutes']} WHERE minute >= %(since)s::bigint GROUP BY 1, 2")
        # Two statements: under READ COMMITTED a statement's snapshot is taken when it
        # starts, so a read in the statement that waits for the lock could miss the
        # commit of the writer it waited for.
        self.bytes_lock = (f"SELECT pg_advisory_xact_lock({BYTES_LOCK_CLASS}, "
                           f"{lock_key(schema)})")
        self.entry_bytes = (f"SELECT coalesce(sum(value), 0)::bigint FROM {t['counters']} "
                            "WHERE name = 'bytes'")
        self.entry_count = (f"SELECT coalesce(sum(value), 0)::bigint FROM {t['counters']} "
                            "WHERE name = 'entries'")
        self.partition_size = (f"SELECT coalesce(sum(entries), 0)::bigint FROM "
                               f"{t['partition_counts']} WHERE partition_id = %s")
        self.settings = f"SELECT name, value FROM {t['settings']}"
        self.set_setting = (f"INSERT INTO {t['settings']} (name, value) VALUES (%s, %s) "
                            "ON CONFLICT (name) DO UPDATE SET value = excluded.value")
        self.add_settings = (f"INSERT INTO {t['settings']} (name, value) SELECT n, v FROM "
                             "unnest(%s::text[], %s::text[]) WITH ORDINALITY AS x(n, v, i) "
                             "ORDER BY i ON CONFLICT (name) DO NOTHING")
        self._writes(t)
        self._search(t)

    def _writes(self, t: dict[str, str]) -> None:
        vec = f"%(vector)s::{self.ext}.vector" if self.ext else "%(vector)s::bytea"
        incarnation = f"(SELECT value FROM {t['settings']} WHERE name = 'incarnation')"
        # The remembered partition id still names the entry's (namespace, scope): an older
        # backup of this schema restored in place keeps the incarnation token but gives the
        # ids of partitions created after the backup to other partitions again.
        partition_ok = (f"EXISTS (SELECT FROM {t['partitions']} WHERE id = %(pid)s::integer "
                        "AND namespace = %(ns)s::text AND scope = %(scope)s::text)")
        # A put is one statement: delete the entry with the same key, insert the new one
        # (a new, larger id) and its usage row, and read the committed entry count (for
        # max_entries). ``n`` reads all of ``d`` before the INSERT runs, so the old row is
        # already deleted by this statement when the unique index is checked. A concurrent
        # client's uncommitted insert of the same key makes ON CONFLICT wait for it, then
        # DO NOTHING: ``id`` comes back NULL and the caller retries. The partition id may
        # be remembered from an earlier incarnation of the schema (or from before a restore):
        # the row is inserted only under the incarnation it was learnt in and while the id
        # names the entry's partition; the token and that check come back to tell.
        self.insert = (
            f"WITH d AS (DELETE FROM {t['entries']} e WHERE e.key_hash = %(key)s "
            "RETURNING e.id, e.partition_id, e.size), n AS (SELECT count(*) FROM d), "
            f"i AS (INSERT INTO {t['entries']} (key_hash, namespace, partition_id, prompt, "
            "response, metadata, size, tokens, created_at, expires_at, ttl, code, vector, "
            "key_material) SELECT %(key)s::bytea, %(ns)s::text, %(pid)s::integer, "
            "%(prompt)s::text, %(response)s::bytea, %(metadata)s::text, %(size)s::bigint, "
            "%(tokens)s::bigint, %(created)s::float8, %(expires)s::float8, %(ttl)s::float8, "
            f"%(code)s::bit(256), {vec}, %(material)s::bytea FROM n "
            f"WHERE {incarnation} IS NOT DISTINCT FROM %(inc)s::text AND {partition_ok} "
            "ON CONFLICT (key_hash) DO NOTHING RETURNING id), "
            f"u AS (INSERT INTO {t['entry_usage']} (entry_id, accessed_at, hits) "
            "SELECT id, %(accessed)s::float8, %(hits)s::bigint FROM i) "
            "SELECT (SELECT id FROM i), array(SELECT id FROM d), "
            "array(SELECT partition_id FROM d), array(SELECT size FROM d), "
            f"(SELECT coalesce(sum(value), 0)::bigint FROM {t['counters']} "
            f"WHERE name = 'entries'), {incarnation}, {partition_ok}")
        self.put_alone = self._put_alone(t, vec, f"{incarnation} IS NOT DISTINCT FROM "
                                         f"%(inc)s::text AND {partition_ok}")
        returning = "RETURNING e.id, e.partition_id, e.size"
        self.delete_where = (f"DELETE FROM {t['entries']} e USING {t['partitions']} p "
                             f"WHERE p.id = e.partition_id AND {{where}} {returning}")
        self.delete_summed = (
            f"WITH d AS (DELETE FROM {t['entries']} e WHERE {{where}} {returning}) "
            "SELECT partition_id, count(*), sum(size)::bigint FROM d GROUP BY partition_id")
        # LRU candidates: the ``count`` least recently accessed entries once this
        # transaction's pending hits (ids, times: arrays) are counted in. Pending hits only
        # move times forward, so the answer is among the first ``count + pending`` by
        # stored time (the index order). Rows another client holds are skipped.
        self.lru_ids = (
            "e.id IN (SELECT c.entry_id FROM (SELECT u.entry_id, u.accessed_at FROM "
            f"{t['entry_usage']} u JOIN {t['entries']} x ON x.id = u.entry_id "
            "ORDER BY u.accessed_at, u.entry_id LIMIT %s FOR UPDATE OF u, x SKIP LOCKED) c "
            "LEFT JOIN unnest(%s::bigint[], %s::float8[]) AS p(id, a) ON p.id = c.entry_id "
            "ORDER BY greatest(c.accessed_at, p.a), c.entry_id LIMIT %s)")
        # LRU candidates with their sizes, in the order of lru_ids (``max_bytes``).
        self.lru_sizes = (
            "SELECT c.entry_id, c.size FROM (SELECT u.entry_id, u.accessed_at, x.size FROM "
            f"{t['entry_usage']} u JOIN {t['entries']} x ON x.id = u.entry_id "
            "ORDER BY u.accessed_at, u.entry_id LIMIT %s FOR UPDATE OF u, x SKIP LOCKED) c "
            "LEFT JOIN unnest(%s::bigint[], %s::float8[]) AS p(id, a) ON p.id = c.entry_id "
            "ORDER BY greatest(c.accessed_at, p.a), c.entry_id")
        self.expired_ids = (f"e.id IN (SELECT id FROM {t['entries']} WHERE expires_at IS NOT "
                            "NULL AND expires_at <= %s FOR UPDATE SKIP LOCKED)")
        # Batched hits, applied at the end of a write transaction; rows another client
        # holds are skipped, never waited for (see PgWriteTxn.apply_access).
        self.touch = (
            "WITH x AS (SELECT * FROM unnest(%(ids)s::bigint[], %(at)s::float8[], "
            "%(hits)s::bigint[]) AS x(id, a, h)), "
            f"l AS (SELECT u.entry_id FROM {t['entry_usage']} u WHERE u.entry_id = ANY(%(ids)s) "
            "ORDER BY u.entry_id FOR UPDATE SKIP LOCKED) "
            f"UPDATE {t['entry_usage']} u SET accessed_at = greatest(u.accessed_at, x.a), "
            "hits = u.hits + x.h FROM l JOIN x ON x.id = l.entry_id "
            "WHERE u.entry_id = l.entry_id")
        self.refresh = (
            "WITH x AS (SELECT * FROM unnest(%(ids)s::bigint[], %(until)s::float8[]) AS x(id, t)), "
            f"l AS (SELECT e.id FROM {t['entries']} e JOIN x ON x.id = e.id "
            "WHERE e.expires_at < x.t ORDER BY e.id FOR UPDATE OF e SKIP LOCKED) "
            f"UPDATE {t['entries']} e SET expires_at = x.t FROM l JOIN x ON x.id = l.id "
            "WHERE e.id = l.id AND e.expires_at < x.t")
        self.record_verdict = (
            f"INSERT INTO {t['feedback']} (entry_id, namespace, query_hash, kind, similarity, "
            "correct, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)")
        # An exported verdict: moved to its entry if an earlier import recorded it already.
        self.restore_verdict = (
            f"WITH u AS (UPDATE {t['feedback']} SET entry_id = %(entry)s WHERE namespace = "
            "%(ns)s AND query_hash IS NOT DISTINCT FROM %(query)s::bytea AND kind = %(kind)s "
            "AND similarity = %(sim)s AND correct = %(correct)s AND created_at = %(at)s "
            f"RETURNING 1) INSERT INTO {t['feedback']} (entry_id, namespace, query_hash, kind, "
            "similarity, correct, created_at) SELECT %(entry)s, %(ns)s, %(query)s::bytea, "
            "%(kind)s, %(sim)s, %(correct)s, %(at)s WHERE NOT EXISTS (SELECT 1 FROM u)")
        self.outcomes = OutcomeQueries(t)
        self.blocked = (f"SELECT entry_id FROM {t['feedback']} "
                        "WHERE query_hash = %s AND NOT correct")
        self.verdicts = (f"SELECT entry_id, namespace, query_hash, kind, similarity, correct, "
                         f"created_at FROM {t['feedback']} {{where}} ORDER BY id")
        # Claims are leases in server time (the clocks of the hosts may differ). A holder
        # may take its own claim again (a retried statement whose first reply was lost).
        now = "extract(epoch FROM clock_timestamp())"
        self.claim = (
            f"INSERT INTO {t['claims']} AS c (key_hash, holder, expires_at) "
            f"VALUES (%s, %s, {now} + %s) ON CONFLICT (key_hash) DO UPDATE "
            "SET holder = excluded.holder, expires_at = excluded.expires_at "
            f"WHERE c.expires_at < {now} OR c.holder = excluded.holder RETURNING 1")
        self.release = f"DELETE FROM {t['claims']} WHERE key_hash = %s AND holder = %s"
        self.purge_claims = f"DELETE FROM {t['claims']} WHERE expires_at < {now}"
        # A transaction's counts, added to its shard just before COMMIT (one prepared
        # statement; rows locked in name, then partition order), and the same counts (but
        # entries / bytes) to the minute's bucket of the time series (migration 0007).
        minute_rows = (
            f"INSERT INTO {t['counter_minutes']} AS m (minute, name, shard, value) {{rows}} "
            "ON CONFLICT (minute, name, shard) DO UPDATE SET value = m.value + excluded.value")
        self.add_counts = (
            f"WITH c AS (INSERT INTO {t['counters']} AS c (name, shard, value) "
            "SELECT n, %(shard)s, v FROM unnest(%(names)s::text[], %(values)s::bigint[]) "
            "AS x(n, v) ORDER BY n "
            "ON CONFLICT (name, shard) DO UPDATE SET value = c.value + excluded.value), "
            "m AS (" + minute_rows.format(rows=(
                "SELECT %(minute)s::bigint, n, %(shard)s, v FROM unnest(%(series)s::text[], "
                "%(series_values)s::bigint[]) AS x(n, v) ORDER BY n")) + ") "
            f"INSERT INTO {t['partition_counts']} AS p (partition_id, shard, entries) "
            "SELECT pid, %(shard)s, n FROM unnest(%(pids)s::integer[], %(sizes)s::bigint[]) "
            "AS x(pid, n) ORDER BY pid ON CONFLICT (partition_id, shard) "
            "DO UPDATE SET entries = p.entries + excluded.entries")
        # History: the shards of minutes before {before} fold into shard 0 (found through
        # the partial index of unfolded rows), then minutes before {expired} go (a range
        # of the primary key). Nobody else writes rows of minutes that far back.
        fold = (
            f"WITH d AS (DELETE FROM {t['counter_minutes']} WHERE shard <> 0 AND minute < "
            "{before} RETURNING minute, name, value) "
            f"INSERT INTO {t['counter_minutes']} AS c (minute, name, shard, value) "
            "SELECT minute, name, 0, sum(value) FROM d GROUP BY minute, name "
            "ORDER BY minute, name "
            "ON CONFLICT (minute, name, shard) DO UPDATE SET value = c.value + excluded.value")
        prune = f"DELETE FROM {t['counter_minutes']} WHERE minute < {{expired}}"
        self.fold_minutes = fold.format(before="%(before)s::bigint")
        self.prune_minutes = prune.format(expired="%(expired)s::bigint")
        # The same, filled with integers by PgWriteTxn (a parameterless batch).
        self.fold_minutes_literal = f"{fold}; {prune}"
        # Filled with literal rows by PgWriteTxn.finish (integers and fixed names only);
        # with the minute's rows in the same statement when there are any.
        self.add_counters_literal = (
            f"INSERT INTO {t['counters']} AS c (name, shard, value) VALUES {{rows}} "
            "ON CONFLICT (name, shard) DO UPDATE SET value = c.value + excluded.value")
        self.add_counters_minutes_literal = (
            "WITH m AS (" + minute_rows.format(rows="VALUES {minute_rows}") + ") "
            + self.add_counters_literal)
        self.add_partition_counts_literal = (
            f"INSERT INTO {t['partition_counts']} AS c (partition_id, shard, entries) "
            "VALUES {rows} "
            "ON CONFLICT (partition_id, shard) DO UPDATE SET entries = c.entries + excluded.entries")

    def search(self, plan: str, k: int) -> str:
        """The search statement of ``plan`` ("hnsw" / "exact") for ``k`` candidates.

        ``k`` is written into the text, not bound: with ``LIMIT $n`` PostgreSQL's generic
        plan of the prepared statement assumes a tenth of the table comes back and hash-joins
        a sequential scan of entry_usage, so every execution is planned afresh (~0.4 ms of a
        1.7 ms search at 100k entries); with the literal the generic plan is the custom
        plan, chosen after psycopg has prepared the statement and never planned again."""
        key = (plan, int(k))
        text = self._search_texts.get(key)
        if text is None:
            template = self.search_hnsw if plan == "hnsw" else self.search_exact
            if template is None:
                raise ValueError(f"no {plan} search without pgvector")
            text = self._search_texts[key] = template.replace("{k}", str(int(k)))
        return text

    def _put_alone(self, t: dict[str, str], vec: str, valid: str) -> str:
        """A whole put as one statement - its own transaction on an autocommit connection
        (one round trip, no BEGIN / COMMIT messages): what ``insert`` does, plus the counts
        that :meth:`PgWriteTxn.finish` adds (entries, bytes, puts, the partition's size,
        the minute's puts), each on this backend's shard, in the usual lock order (the
        entry, then counters by name, the minute, the partition counts: the CTEs that the
        main query does not read run after it, in this order). Nothing at all is done
        (``ok`` is empty) when ``valid`` fails (the incarnation moved, or the partition
        id names another partition) or the cache is full (``max_entries``:
        the caller's transaction evicts then); the id comes back NULL then, and also when
        a concurrent insert of the same key won (the caller's transaction retries)."""
        shard = f"(pg_backend_pid() %% {SHARDS})"
        entries = f"(SELECT coalesce(sum(value), 0) FROM {t['counters']} WHERE name = 'entries')"
        return (
            f"WITH ok AS (SELECT 1 WHERE {valid} "
            f"AND (%(max)s::bigint IS NULL OR {entries} < %(max)s::bigint)), "
            f"d AS (DELETE FROM {t['entries']} e WHERE e.key_hash = %(key)s AND EXISTS "
            "(SELECT FROM ok) RETURNING e.id, e.partition_id, e.size), "
            "n AS (SELECT count(*) AS c, coalesce(sum(size), 0)::bigint AS b FROM d), "
            f"i AS (INSERT INTO {t['entries']} (key_hash, namespace, partition_id, prompt, "
            "response, metadata, size, tokens, created_at, expires_at, ttl, code, vector, "
            "key_material) SELECT %(key)s::bytea, %(ns)s::text, %(pid)s::integer, "
            "%(prompt)s::text, %(response)s::bytea, %(metadata)s::text, %(size)s::bigint, "
            "%(tokens)s::bigint, %(created)s::float8, %(expires)s::float8, %(ttl)s::float8, "
            f"%(code)s::bit(256), {vec}, %(material)s::bytea FROM n, ok "
            "ON CONFLICT (key_hash) DO NOTHING RETURNING id), "
            f"u AS (INSERT INTO {t['entry_usage']} (entry_id, accessed_at, hits) "
            "SELECT id, %(accessed)s::float8, %(hits)s::bigint FROM i), "
            "k AS (SELECT (SELECT count(*) FROM i) AS ins, n.c, n.b FROM n), "
            f"c AS (INSERT INTO {t['counters']} AS c (name, shard, value) "
            f"SELECT x.name, {shard}, x.v FROM k, LATERAL (VALUES ('bytes', k.ins * "
            "%(size)s::bigint - k.b), ('entries', k.ins - k.c), ('puts', k.ins)) AS x(name, v) "
            "WHERE x.v <> 0 ORDER BY x.name "
            "ON CONFLICT (name, shard) DO UPDATE SET value = c.value + excluded.value), "
            f"m AS (INSERT INTO {t['counter_minutes']} AS m (minute, name, shard, value) "
            f"SELECT %(minute)s::bigint, 'puts', {shard}, 1 FROM i "
            "ON CONFLICT (minute, name, shard) DO UPDATE SET value = m.value + excluded.value), "
            f"p AS (INSERT INTO {t['partition_counts']} AS p (partition_id, shard, entries) "
            f"SELECT x.pid, {shard}, sum(x.v) FROM (SELECT %(pid)s::integer AS pid, 1 AS v "
            "FROM i UNION ALL SELECT partition_id, -1 FROM d) AS x GROUP BY x.pid "
            "HAVING sum(x.v) <> 0 ORDER BY x.pid "
            "ON CONFLICT (partition_id, shard) DO UPDATE SET entries = p.entries + excluded.entries) "
            "SELECT (SELECT id FROM i)")

    def _search(self, t: dict[str, str]) -> None:
        #: Templates of the search statements (``{k}``: see :meth:`search`).
        self.search_hnsw: str | None
        self._search_texts: dict[tuple[str, int], str] = {}
        # The partition id is remembered by the client: searched only under the schema's
        # incarnation it was learnt in and while it names the same (namespace, scope) - a
        # restored older backup gives ids out again (one-time filters, evaluated once per
        # statement).
        live = ("e.partition_id = %(p)s AND e.code IS NOT NULL "
                "AND (e.expires_at IS NULL OR e.expires_at > %(now)s) "
                f"AND (SELECT value FROM {t['settings']} WHERE name = 'incarnation') "
                "IS NOT DISTINCT FROM %(inc)s::text "
                f"AND EXISTS (SELECT FROM {t['partitions']} WHERE id = %(p)s "
                "AND namespace = %(ns)s::text AND scope = %(scope)s::text)")
        exact = (f"SELECT e.id FROM {t['entries']} e WHERE {live} "
                 "ORDER BY bit_count(e.code # %(code)s::bit(256)), e.id DESC LIMIT {k}")
        if self.ext:
            x = self.ext
            hnsw = (f"SELECT e.id FROM {t['entries']} e WHERE {live} "
                    f"ORDER BY e.code OPERATOR({x}.<~>) %(code)s::bit(256) LIMIT {{k}}")
            # Rescoring in the same statement: exact cosine on the stored float vectors.
            # A vector of another dimension would make <=> raise: its cosine is NULL (a
            # damaged vector, skipped and reported by store/rescore.py).
            rescore = (f"SELECT {ROW_COLUMNS}, CASE WHEN {x}.vector_dims(e.vector) = %(dim)s "
                       f"THEN 1 - (e.vector OPERATOR({x}.<=>) %(q)s) END AS cosine "
                       f"FROM c JOIN {self.joined} ON e.id = c.id "
                       "ORDER BY cosine DESC NULLS LAST, e.id DESC")
            self.search_hnsw = f"WITH c AS MATERIALIZED ({hnsw}) {rescore}"
            self.search_exact = f"WITH c AS MATERIALIZED ({exact}) {rescore}"
        else:
            # bytea vectors: the k candidates come back with their vectors, rescored in
            # Python as the SQLite engine does (store/rescore.py).
            self.search_hnsw = None
            self.search_exact = (f"WITH c AS MATERIALIZED ({exact}) SELECT {ROW_COLUMNS}, "
                                 f"e.vector FROM c JOIN {self.joined} ON e.id = c.id")


__all__ = ["BEGIN", "RECORD_COLUMNS", "ROW_COLUMNS", "SHARDS", "Queries"]
