-- semcache schema 7: the shared counters per minute, for the dashboard's time series.
-- Every write transaction that adds this process's batched counts to `counters` adds the
-- same counts to the row of the current minute (epoch seconds / 60, by the writer's clock),
-- so the series survive restarts and add up across processes. Rows older than 30 days are
-- deleted by writers (at most once an hour per process). entries / bytes are not here:
-- they are levels, not counts.
CREATE TABLE counter_minutes (
    minute INTEGER NOT NULL,                 -- floor(epoch seconds / 60), UTC
    name   TEXT NOT NULL,                    -- a counter name, as in `counters`
    value  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, name)
) WITHOUT ROWID;
