-- semcache schema 8: the error bound's evidence (issue 22). An outcome is a verified answer
-- of a candidate for a query: after an exploration (a lookup that answered a miss instead
-- of serving the candidate) the request's fresh answer compared with the candidate's, or a
-- verdict on a semantic hit. Recorded in the transaction of the put that brought the fresh
-- answer. Each entry keeps its newest 16, each namespace its newest 20000; the pools keep
-- every count, per namespace and score bin (the bin of the decision's p_wrong).
CREATE TABLE outcomes (
    id          INTEGER PRIMARY KEY,
    entry_id    INTEGER NOT NULL,            -- not a foreign key: as feedback
    namespace   TEXT NOT NULL,
    similarity  REAL NOT NULL,
    prior       REAL NOT NULL,               -- the decision's p_wrong for the pair
    bin         INTEGER NOT NULL,
    correct     INTEGER NOT NULL,            -- 1 right, 0 wrong
    source      TEXT NOT NULL,               -- 'explore' or 'feedback'
    created_at  REAL NOT NULL
);
CREATE INDEX outcomes_entry ON outcomes (entry_id, id);
CREATE INDEX outcomes_namespace ON outcomes (namespace, id);
CREATE TABLE outcome_pools (
    namespace   TEXT NOT NULL,
    bin         INTEGER NOT NULL,
    n_right     INTEGER NOT NULL DEFAULT 0,
    n_wrong     INTEGER NOT NULL DEFAULT 0,
    expected    REAL NOT NULL DEFAULT 0,     -- sum of the priors: wrong answers expected
    PRIMARY KEY (namespace, bin)
) WITHOUT ROWID;
