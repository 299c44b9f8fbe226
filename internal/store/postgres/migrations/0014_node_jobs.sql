-- Whether a node ran the hub's jobs at its last renewal, and how many
-- (GET /cluster: one node of a cluster runs them).
ALTER TABLE nodes ADD COLUMN runs_jobs boolean NOT NULL DEFAULT false;
ALTER TABLE nodes ADD COLUMN running_jobs integer NOT NULL DEFAULT 0;
