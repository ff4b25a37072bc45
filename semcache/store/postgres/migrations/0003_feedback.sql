-- semcache PostgreSQL schema 3: verdicts on served hits (Cache.feedback), for
-- `semcache calibrate` and so that a (query, entry) pair judged wrong is never served
-- again by any client (as SQLite's migration 0003).
CREATE TABLE {schema}.feedback (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id    bigint NOT NULL,              -- not a foreign key: verdicts outlive entries
    namespace   text NOT NULL,
    query_hash  bytea,                        -- SHA-256 of the query text (NULL if unknown)
    kind        text NOT NULL,                -- 'exact' or 'semantic'
    similarity  double precision NOT NULL,
    correct     boolean NOT NULL,
    created_at  double precision NOT NULL
);
CREATE INDEX feedback_blocked ON {schema}.feedback (query_hash, entry_id) WHERE NOT correct;
CREATE INDEX feedback_namespace ON {schema}.feedback (namespace, created_at);
