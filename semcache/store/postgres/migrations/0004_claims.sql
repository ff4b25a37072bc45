-- semcache PostgreSQL schema 4: claims of identical misses (Cache.claim), shared by every
-- host. A row is a lease: whoever inserts it (or finds the previous one lapsed) fetches
-- the answer and deletes the row when done; a holder that dies frees the key when its
-- lease ends. UNLOGGED: claims are worth nothing after a server crash, and writing them
-- costs no WAL and no fsync (they are not replicated to standbys either, which only
-- serve reads).
CREATE UNLOGGED TABLE {schema}.claims (
    key_hash   bytea PRIMARY KEY,
    holder     text NOT NULL,                 -- the claiming process (host:pid:random)
    expires_at double precision NOT NULL      -- server time (epoch s) the lease ends
);
