-- The job engine (internal/job).
--
-- device_jobs is rebuilt WITHOUT ROWID, clustered on (job_id, device_id):
-- executors walk a job's rows in device_id order with a cursor, so the
-- primary key serves every engine read and the (job_id, status) index,
-- which every status change had to rewrite, goes away. A twin-update job
-- over a million devices writes each row twice (snapshot, completion);
-- one B-tree per write instead of three is most of its store cost.
CREATE TABLE device_jobs_new (
    job_id            TEXT NOT NULL,
    device_id         TEXT NOT NULL,
    job_type          TEXT NOT NULL,
    status            TEXT NOT NULL,
    start_time        TEXT NOT NULL,
    end_time          TEXT NOT NULL,
    created_time      TEXT NOT NULL,
    last_updated_time TEXT NOT NULL,
    outcome           TEXT,
    error_code        TEXT,
    error_description TEXT,
    PRIMARY KEY (job_id, device_id)
) WITHOUT ROWID;
INSERT INTO device_jobs_new (job_id, device_id, job_type, status, start_time, end_time,
    created_time, last_updated_time, outcome, error_code, error_description)
SELECT job_id, device_id, job_type, status, start_time, end_time,
    created_time, last_updated_time, outcome, error_code, error_description FROM device_jobs;
DROP TABLE device_jobs;
ALTER TABLE device_jobs_new RENAME TO device_jobs;

-- started_time is when the engine actually started the job (start_time is
-- when it was asked to): the deadline (maxExecutionTimeInSeconds) counts
-- from it, also after a restart.
ALTER TABLE jobs ADD COLUMN started_time TEXT;

-- Listing pages through jobs by creation; retention finds old finished jobs.
CREATE INDEX jobs_created ON jobs (created_time, job_id);
CREATE INDEX jobs_end ON jobs (end_time) WHERE end_time IS NOT NULL;
