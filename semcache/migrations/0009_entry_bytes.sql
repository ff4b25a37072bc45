-- semcache schema 9: what an entry occupies, for max_bytes and stats()["bytes"].
-- entries.size counted the response, prompt (in characters), metadata and vector. It now
-- counts everything stored for the entry (semcache.store.base.entry_size, the one formula
-- semcache writes with): 64 bytes for the fixed-width columns (id, partition, tokens,
-- times, ttl, hits, outcome counts), the key hash and key material, the namespace, the
-- prompt and metadata in UTF-8 bytes, the compressed response, the float vector and the
-- code. The trigger on size keeps counters.bytes exact; the recount below makes sure.
-- max_bytes itself is a setting (settings table, name 'max_bytes'), like max_entries.
UPDATE entries SET size = 64 + length(key_hash) + coalesce(length(key_material), 0)
    + length(CAST(namespace AS BLOB)) + coalesce(length(CAST(prompt AS BLOB)), 0)
    + length(response) + coalesce(length(CAST(metadata AS BLOB)), 0)
    + coalesce(length(vector), 0) + coalesce(length(code), 0);
UPDATE counters SET value = (SELECT coalesce(sum(size), 0) FROM entries) WHERE name = 'bytes';
