-- semcache PostgreSQL schema 2: the exact-key material of entries stored by request
-- (as SQLite's migration 0002). An entry's key_hash is SHA-256 over (kind, namespace,
-- material); keeping the material lets an export/import derive the key again for the
-- namespace it imports into. NULL for plain prompts (their material is the prompt) and
-- for vectors. Adding a nullable column without a default rewrites nothing.
ALTER TABLE {schema}.entries ADD COLUMN key_material bytea;
