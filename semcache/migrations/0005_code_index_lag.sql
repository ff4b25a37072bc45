-- semcache schema 5: the sqlite-vec table entry_codes follows entries in batches.
-- Puts no longer write their entry_codes row in the same statement sequence; it is written
-- later, in id order, by whichever writer catches up (a write that finds more than a few
-- thousand rows pending, the flush timer of a process that wrote, close(), vacuum).
-- codes_through is the id up to which every entry with a code has its entry_codes row;
-- entries above it have none yet, and the SQL search scans them directly, so nothing is
-- ever missed. Deletes and expiry changes keep applying to entry_codes as before.
ALTER TABLE sync_state ADD COLUMN codes_through INTEGER NOT NULL DEFAULT 0;
UPDATE sync_state SET codes_through = (SELECT coalesce(max(id), 0) FROM entries) WHERE id = 1;
