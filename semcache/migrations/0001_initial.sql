-- semcache schema 1: entries, partitions, settings, counters, the sqlite-vec code table.
-- Every table and column is described in docs/schema.md.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row; change_seq counts every change that the code mirror must reflect
-- (insert, delete, new expiry, new code). Triggers below keep it honest even for
-- changes made by hand with the sqlite3 CLI.
CREATE TABLE sync_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    change_seq INTEGER NOT NULL
);
INSERT INTO sync_state (id, change_seq) VALUES (1, 0);

-- A partition is what a semantic search is restricted to: a namespace (tenant) plus
-- a scope (for LLM requests, the hash of model + parameters + conversation prefix).
CREATE TABLE partitions (
    id        INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    scope     TEXT NOT NULL DEFAULT '',
    UNIQUE (namespace, scope)
);

CREATE TABLE entries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash     BLOB NOT NULL UNIQUE,
    namespace    TEXT NOT NULL,
    partition_id INTEGER NOT NULL REFERENCES partitions (id),
    prompt       TEXT,
    response     BLOB NOT NULL,
    metadata     TEXT,
    size         INTEGER NOT NULL,
    tokens       INTEGER NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    accessed_at  REAL NOT NULL,
    expires_at   REAL,
    ttl          REAL,
    hits         INTEGER NOT NULL DEFAULT 0,
    code         BLOB,
    vector       BLOB
);
CREATE INDEX entries_accessed_at ON entries (accessed_at);
CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX entries_namespace ON entries (namespace);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES
    ('hits', 0), ('exact_hits', 0), ('semantic_hits', 0), ('misses', 0), ('puts', 0),
    ('evictions', 0), ('expirations', 0), ('tokens_saved', 0), ('entries', 0), ('bytes', 0);

CREATE TRIGGER entries_after_insert AFTER INSERT ON entries BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'entries';
    UPDATE counters SET value = value + NEW.size WHERE name = 'bytes';
    UPDATE sync_state SET change_seq = change_seq + 1 WHERE id = 1;
END;

CREATE TRIGGER entries_after_delete AFTER DELETE ON entries BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'entries';
    UPDATE counters SET value = value - OLD.size WHERE name = 'bytes';
    UPDATE sync_state SET change_seq = change_seq + 1 WHERE id = 1;
END;

CREATE TRIGGER entries_after_update_size AFTER UPDATE OF size ON entries BEGIN
    UPDATE counters SET value = value - OLD.size + NEW.size WHERE name = 'bytes';
END;

CREATE TRIGGER entries_after_update_search AFTER UPDATE OF expires_at, partition_id, code ON entries
BEGIN
    UPDATE sync_state SET change_seq = change_seq + 1 WHERE id = 1;
END;

-- The 256-bit codes for SQL-side Hamming search with sqlite-vec. expires_at is whole
-- epoch seconds rounded up (4611686018427387904 = never), so KNN queries can filter on it.
CREATE VIRTUAL TABLE entry_codes USING vec0 (
    entry_id     INTEGER PRIMARY KEY,
    partition_id INTEGER PARTITION KEY,
    expires_at   INTEGER,
    code         BIT[256]
);
