-- semcache PostgreSQL schema 9: what an entry occupies, for max_bytes and stats()["bytes"]
-- (as SQLite's migration 0009; the formula is semcache.store.base.entry_size): 64 bytes
-- for the fixed-width columns, the key hash and key material, the namespace, the prompt
-- and metadata in UTF-8 bytes, the compressed response, the float32 vector (4 bytes per
-- dimension of the cache) and the 32-byte code. The counters are recounted from the rows.
UPDATE {schema}.entries SET size = 64 + octet_length(key_hash)
    + coalesce(octet_length(key_material), 0) + octet_length(namespace)
    + coalesce(octet_length(prompt), 0) + octet_length(response)
    + coalesce(octet_length(metadata), 0)
    + CASE WHEN vector IS NULL THEN 0 ELSE 4 * (SELECT nullif(value, 'null')::integer
          FROM {schema}.settings WHERE name = 'dim') END
    + CASE WHEN code IS NULL THEN 0 ELSE 32 END;
DELETE FROM {schema}.counters WHERE name = 'bytes';
INSERT INTO {schema}.counters (name, shard, value)
    SELECT 'bytes', 0, coalesce(sum(size), 0) FROM {schema}.entries;
