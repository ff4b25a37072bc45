-- semcache PostgreSQL schema 7: the shared counters per minute, for the dashboard's time
-- series (as SQLite's migration 0007). A transaction adds its counts to the row of the
-- current minute (epoch seconds / 60, by the client's clock) and of its shard - the shard
-- of counters, so concurrent writers do not queue on one row - with the statement that
-- adds them to counters, just before COMMIT. Writers fold the shards of minutes older
-- than two hours into shard 0 and delete minutes older than 30 days (at most every ten
-- minutes per process), so a minute keeps one row per counter once it is history.
CREATE TABLE {schema}.counter_minutes (
    minute bigint NOT NULL,                   -- floor(epoch seconds / 60), UTC
    name   text NOT NULL,                     -- a counter name, as in counters
    shard  integer NOT NULL,
    value  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, name, shard)
);
-- The rows a writer folds into shard 0 (see above), without scanning the folded ones.
CREATE INDEX counter_minutes_unfolded ON {schema}.counter_minutes (minute) WHERE shard <> 0;
