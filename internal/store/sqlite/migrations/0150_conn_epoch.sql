-- The connection epoch of a device or module. Only a cluster's nodes
-- claim connections with epochs (internal/store/postgres, migration
-- 0015); a SQLite hub is one node and leaves it 0. The column is here so
-- that both stores keep the same tables (`herd store copy`).
ALTER TABLE devices ADD COLUMN conn_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE modules ADD COLUMN conn_epoch INTEGER NOT NULL DEFAULT 0;
