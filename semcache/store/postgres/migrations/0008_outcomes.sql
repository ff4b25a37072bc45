-- semcache PostgreSQL schema 8: the error bound's evidence (as SQLite's migration 0008):
-- outcomes of explored candidates and of verdicts, each entry keeping its newest 16 and
-- each namespace its newest 20000, and their pools per namespace and score bin.
CREATE TABLE {schema}.outcomes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id    bigint NOT NULL,              -- not a foreign key: as feedback
    namespace   text NOT NULL,
    similarity  double precision NOT NULL,
    prior       double precision NOT NULL,    -- the decision's p_wrong for the pair
    bin         integer NOT NULL,
    correct     boolean NOT NULL,
    source      text NOT NULL,                -- 'explore' or 'feedback'
    created_at  double precision NOT NULL
);
CREATE INDEX outcomes_entry ON {schema}.outcomes (entry_id, id);
CREATE INDEX outcomes_namespace ON {schema}.outcomes (namespace, id);
CREATE TABLE {schema}.outcome_pools (
    namespace   text NOT NULL,
    bin         integer NOT NULL,
    n_right     bigint NOT NULL DEFAULT 0,
    n_wrong     bigint NOT NULL DEFAULT 0,
    expected    double precision NOT NULL DEFAULT 0,  -- sum of the priors
    PRIMARY KEY (namespace, bin)
);
