-- Retries of a method job's devices (herd.retry, internal/job/methodrun.go).
-- attempts counts the times a device was started: claimed for a call,
-- failed offline from pending, or written by a twin job. A failed attempt
-- that its job retries goes back to pending with retry_at, the time it is
-- due again (NULL otherwise), keeping its error until the next attempt.
ALTER TABLE device_jobs ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE device_jobs ADD COLUMN retry_at text COLLATE "C";
-- Records written before: every device that has or had an outcome was
-- started once; of those the deadline failed, which were still pending
-- cannot be told, and they keep 0.
UPDATE device_jobs SET attempts = 1 WHERE status IN ('running', 'completed')
    OR status = 'failed' AND error_code IS DISTINCT FROM 'JobDeadlineExceeded';
