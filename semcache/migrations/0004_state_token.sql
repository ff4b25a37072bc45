-- semcache schema 4: a random state token beside change_seq.
-- Every change the code mirror must reflect (the same triggers that count change_seq, so
-- also changes made by hand with the sqlite3 CLI) draws a new random token. The mirror
-- records (change_seq, state_token) of the state it was built from; a database restored
-- from a backup, or one that reached the same change_seq through other writes, has another
-- token, so a mirror is only ever trusted for the exact state it reflects.
ALTER TABLE sync_state ADD COLUMN state_token INTEGER NOT NULL DEFAULT 0;
UPDATE sync_state SET state_token = random() WHERE id = 1;

DROP TRIGGER entries_after_insert;
CREATE TRIGGER entries_after_insert AFTER INSERT ON entries BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'entries';
    UPDATE counters SET value = value + NEW.size WHERE name = 'bytes';
    UPDATE sync_state SET change_seq = change_seq + 1, state_token = random() WHERE id = 1;
END;

DROP TRIGGER entries_after_delete;
CREATE TRIGGER entries_after_delete AFTER DELETE ON entries BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'entries';
    UPDATE counters SET value = value - OLD.size WHERE name = 'bytes';
    UPDATE sync_state SET change_seq = change_seq + 1, state_token = random() WHERE id = 1;
END;

DROP TRIGGER entries_after_update_search;
CREATE TRIGGER entries_after_update_search AFTER UPDATE OF expires_at, partition_id, code ON entries
BEGIN
    UPDATE sync_state SET change_seq = change_seq + 1, state_token = random() WHERE id = 1;
END;
