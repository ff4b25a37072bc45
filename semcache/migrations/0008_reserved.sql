-- semcache schema 8: reserved for the per-entry outcomes migration (another branch).
-- Migrations must be numbered 1..n without gaps, and number 9 (the size definition for
-- max_bytes) was written before 8 landed: this placeholder does nothing and is replaced
-- by that migration when the branches are merged.
SELECT 1;
