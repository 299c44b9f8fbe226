-- A job's "herd" member (rollout pace, abort criteria) as compact JSON,
-- NULL when the job has none (internal/job, options.go).
ALTER TABLE jobs ADD COLUMN herd TEXT;
