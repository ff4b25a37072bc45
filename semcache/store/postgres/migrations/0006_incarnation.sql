-- semcache PostgreSQL schema 6: the schema's incarnation token (as SQLite's migration 6).
-- A random value drawn when the schema becomes a cache. Clients remember partition ids and
-- decoded responses by entry id; after an operator drops the schema and another client
-- creates it again, the same ids name other tenants' rows. The statements that use a
-- remembered id check the token in the same statement, and a client that sees it change
-- drops every memo.
INSERT INTO {schema}.settings (name, value)
    VALUES ('incarnation', md5(random()::text || clock_timestamp()::text))
    ON CONFLICT (name) DO NOTHING;
