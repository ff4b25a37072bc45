-- semcache PostgreSQL schema 1: entries, their usage, partitions, settings, counters.
-- A template: {schema} is the cache's schema, {vector_type} the type of the float
-- vectors (pgvector's vector, or bytea), {ext} pgvector's schema. Lines between
-- "--@pgvector" and "--@end" are kept only when pgvector is used. No other braces here.
-- Every table and column is described in docs/schema.md (PostgreSQL section).

CREATE TABLE {schema}.settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- A partition is what a semantic search is restricted to: a namespace (tenant) plus a
-- scope (for LLM requests, the hash of model + parameters + conversation prefix).
-- Partitions are never deleted, so every client may cache their ids.
CREATE TABLE {schema}.partitions (
    id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace text NOT NULL,
    scope     text NOT NULL DEFAULT '',
    UNIQUE (namespace, scope)
);

-- One row per cached answer; nothing here changes after the insert except expires_at
-- (refresh on access). No foreign key to partitions: the key-share lock it would take
-- on the partition row on every insert serializes concurrent writers of one partition.
CREATE TABLE {schema}.entries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash     bytea NOT NULL UNIQUE,
    namespace    text NOT NULL,
    partition_id integer NOT NULL,
    prompt       text,
    response     bytea NOT NULL,
    metadata     text,
    size         bigint NOT NULL,
    tokens       bigint NOT NULL DEFAULT 0,
    created_at   double precision NOT NULL,
    expires_at   double precision,
    ttl          double precision,
    code         bit(256),
    vector       {vector_type}
);
-- Responses are zstd-compressed already: store them out of line without compressing
-- again. Vectors stay in the row when they fit (rescoring reads 16 of them per search).
ALTER TABLE {schema}.entries ALTER COLUMN response SET STORAGE EXTERNAL;
ALTER TABLE {schema}.entries ALTER COLUMN vector SET STORAGE MAIN;
CREATE INDEX entries_partition ON {schema}.entries (partition_id);
CREATE INDEX entries_expires_at ON {schema}.entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX entries_namespace ON {schema}.entries (namespace);
--@pgvector
CREATE INDEX entries_code_hnsw ON {schema}.entries USING hnsw (code {ext}.bit_hamming_ops);
--@end

-- Hits and last access, in their own narrow table: every hit updates them, and an update
-- of an indexed column of entries would re-insert the row into every index of entries,
-- the HNSW graph included.
CREATE TABLE {schema}.entry_usage (
    entry_id    bigint PRIMARY KEY REFERENCES {schema}.entries (id) ON DELETE CASCADE,
    accessed_at double precision NOT NULL,
    hits        bigint NOT NULL DEFAULT 0
);
CREATE INDEX entry_usage_accessed_at ON {schema}.entry_usage (accessed_at, entry_id);

-- Shared counters, sharded so that concurrent writers do not queue on one hot row:
-- each transaction adds to the shard of its server process (pg_backend_pid() mod 64),
-- and readers sum the shards. entries / bytes are kept exact: semcache adds what its own
-- statements did just before COMMIT; the triggers below count changes made by hand.
CREATE TABLE {schema}.counters (
    name  text NOT NULL,
    shard integer NOT NULL,
    value bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (name, shard)
);
CREATE TABLE {schema}.partition_counts (
    partition_id integer NOT NULL,
    shard        integer NOT NULL,
    entries      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (partition_id, shard)
);
CREATE VIEW {schema}.counter_totals AS
    SELECT name, sum(value)::bigint AS value FROM {schema}.counters GROUP BY name;

CREATE FUNCTION {schema}.count_hand_made_changes() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    my_shard integer := mod(pg_backend_pid(), 64);
    parts integer[];
    ns bigint[];
    bs bigint[];
BEGIN
    IF current_setting('semcache.app', true) = 'on' THEN
        RETURN NULL;  -- semcache counts its own changes just before COMMIT
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM {schema}.counters WHERE name IN ('bytes', 'entries');
        DELETE FROM {schema}.partition_counts;
        RETURN NULL;
    END IF;
    -- Each branch names only the transition tables its trigger has.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(partition_id), array_agg(n), array_agg(b) INTO parts, ns, bs
        FROM (SELECT partition_id, count(*) AS n, sum(size) AS b FROM new_rows
              GROUP BY partition_id) d;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(partition_id), array_agg(n), array_agg(b) INTO parts, ns, bs
        FROM (SELECT partition_id, -count(*) AS n, -sum(size) AS b FROM old_rows
              GROUP BY partition_id) d;
    ELSE
        SELECT array_agg(partition_id), array_agg(n), array_agg(b) INTO parts, ns, bs
        FROM (SELECT partition_id, sum(n) AS n, sum(b) AS b FROM (
                  SELECT partition_id, 1 AS n, size AS b FROM new_rows
                  UNION ALL SELECT partition_id, -1, -size FROM old_rows) u
              GROUP BY partition_id) d;
    END IF;
    IF parts IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO {schema}.counters AS c (name, shard, value)
        SELECT 'bytes', my_shard, sum(x) FROM unnest(bs) AS x
        UNION ALL SELECT 'entries', my_shard, sum(x) FROM unnest(ns) AS x
        ON CONFLICT (name, shard) DO UPDATE SET value = c.value + excluded.value;
    INSERT INTO {schema}.partition_counts AS c (partition_id, shard, entries)
        SELECT p, my_shard, n FROM unnest(parts, ns) AS t(p, n) ORDER BY p
        ON CONFLICT (partition_id, shard) DO UPDATE SET entries = c.entries + excluded.entries;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER entries_count_insert AFTER INSERT ON {schema}.entries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_hand_made_changes();
CREATE TRIGGER entries_count_delete AFTER DELETE ON {schema}.entries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_hand_made_changes();
CREATE TRIGGER entries_count_update AFTER UPDATE ON {schema}.entries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_hand_made_changes();
CREATE TRIGGER entries_count_truncate AFTER TRUNCATE ON {schema}.entries
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_hand_made_changes();

COMMENT ON SCHEMA {schema} IS 'semcache cache (see docs/schema.md)';
