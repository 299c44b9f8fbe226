-- Whether a node ran the hub's jobs at its last renewal, and how many
-- (GET /cluster: one node of a cluster runs them).
ALTER TABLE nodes ADD COLUMN runs_jobs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN running_jobs INTEGER NOT NULL DEFAULT 0;
