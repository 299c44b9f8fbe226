-- The job leases of a cluster, as in the PostgreSQL store's migration
-- 0017: a SQLite store serves one hub, which runs every job itself and
-- leases none, so they stay empty here; they are kept so that the two
-- stores have the same tables (`herd store copy`).
ALTER TABLE jobs ADD COLUMN lease_node TEXT;
ALTER TABLE jobs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_until TEXT;
