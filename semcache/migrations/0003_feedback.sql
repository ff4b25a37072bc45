-- semcache schema 3: verdicts on served hits (Cache.feedback), for `semcache calibrate`
-- and so that a (query, entry) pair judged wrong is never served again.
CREATE TABLE feedback (
    id           INTEGER PRIMARY KEY,
    entry_id     INTEGER NOT NULL,           -- not a foreign key: verdicts outlive entries
    namespace    TEXT NOT NULL,
    query_hash   BLOB,                       -- SHA-256 of the query text (NULL if unknown)
    kind         TEXT NOT NULL,              -- 'exact' or 'semantic'
    similarity   REAL NOT NULL,
    correct      INTEGER NOT NULL,           -- 1 right, 0 wrong
    created_at   REAL NOT NULL
);
CREATE INDEX feedback_blocked ON feedback (query_hash, entry_id) WHERE correct = 0;
CREATE INDEX feedback_namespace ON feedback (namespace, created_at);
