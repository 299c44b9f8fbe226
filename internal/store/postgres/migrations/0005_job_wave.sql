-- The wave of a job's rollout its devices are started from (0-based;
-- herd.rollout.waves, internal/job/waves.go). The engine moves it on
-- when a wave's devices have all finished, and with pauseBetweenWaves
-- pauses the job in the same statement.
ALTER TABLE jobs ADD COLUMN wave integer NOT NULL DEFAULT 0;
