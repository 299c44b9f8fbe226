-- Continuous jobs (herd.continuous, internal/job/continuous.go): such a
-- job is not completed when its devices are all done, but runs until its
-- deadline, targeting devices that start matching its condition.
ALTER TABLE jobs ADD COLUMN continuous INTEGER NOT NULL DEFAULT 0;
