-- A device record changes status once or twice after the snapshot writes
-- it (pending → completed for a twin job, pending → running → completed
-- for a method job), and status is not indexed: with room left in each
-- page those updates are HOT (the new row version goes beside the old one
-- and no index entry is added), which took the record updates of a
-- million-device twin job from ~7.7 s to ~2.9 s (docs/benchmarks.md,
-- "PostgreSQL"). The table takes twice the pages for it.
ALTER TABLE device_jobs SET (fillfactor = 50);
