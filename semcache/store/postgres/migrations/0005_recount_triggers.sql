-- semcache PostgreSQL schema 5: cheaper counting of hand-made changes.
-- Schema 1 counted rows changed by hand (psql, not semcache) with statement triggers over
-- transition tables. PostgreSQL fills those tables for every statement, semcache's own
-- included, before the trigger can see that semcache counts its own changes: a third of
-- the server time of a put. Now the trigger has no transition tables and a WHEN clause
-- that is false for semcache's transactions (they set semcache.app), so semcache's
-- statements cost nothing extra; a hand-made statement recounts entries, bytes and the
-- partition sizes from the rows, after waiting for semcache's writers to finish (SHARE
-- lock on entries) and keeping new ones out until its transaction ends, so the totals are
-- exact. Hand-made statements are rare; a recount costs a scan of entries.
DROP TRIGGER entries_count_insert ON {schema}.entries;
DROP TRIGGER entries_count_delete ON {schema}.entries;
DROP TRIGGER entries_count_update ON {schema}.entries;
DROP TRIGGER entries_count_truncate ON {schema}.entries;
DROP FUNCTION {schema}.count_hand_made_changes();

CREATE FUNCTION {schema}.recount_after_hand_made_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    LOCK TABLE {schema}.entries IN SHARE MODE;
    DELETE FROM {schema}.counters WHERE name IN ('entries', 'bytes');
    INSERT INTO {schema}.counters (name, shard, value)
        SELECT 'entries', 0, count(*) FROM {schema}.entries
        UNION ALL SELECT 'bytes', 0, coalesce(sum(size), 0) FROM {schema}.entries;
    DELETE FROM {schema}.partition_counts;
    INSERT INTO {schema}.partition_counts (partition_id, shard, entries)
        SELECT partition_id, 0, count(*) FROM {schema}.entries GROUP BY partition_id;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER entries_recount AFTER INSERT OR UPDATE OR DELETE ON {schema}.entries
    FOR EACH STATEMENT WHEN (current_setting('semcache.app', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {schema}.recount_after_hand_made_change();
CREATE TRIGGER entries_recount_truncate AFTER TRUNCATE ON {schema}.entries
    FOR EACH STATEMENT WHEN (current_setting('semcache.app', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {schema}.recount_after_hand_made_change();
