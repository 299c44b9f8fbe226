-- Jobs v2: one row per job. The request column keeps the job's
-- cloudToDeviceMethod or updateTwin document as JSON. The statistics live
-- here and change in the same transactions as the device_jobs rows, so that
-- device_count = succeeded_count + failed_count + running_count +
-- pending_count at every commit.
CREATE TABLE jobs (
    job_id                TEXT PRIMARY KEY,
    type                  TEXT NOT NULL,
    status                TEXT NOT NULL,
    query_condition       TEXT NOT NULL,
    created_time          TEXT NOT NULL,
    start_time            TEXT NOT NULL,
    end_time              TEXT,
    max_execution_seconds INTEGER NOT NULL,
    request               TEXT NOT NULL,
    failure_reason        TEXT,
    status_message        TEXT,
    device_count          INTEGER NOT NULL DEFAULT 0,
    succeeded_count       INTEGER NOT NULL DEFAULT 0,
    failed_count          INTEGER NOT NULL DEFAULT 0,
    running_count         INTEGER NOT NULL DEFAULT 0,
    pending_count         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_status_start ON jobs (status, start_time);

-- One row per device targeted by a job (the devices.jobs query source).
-- Times are TEXT in Azure's layout; a time never set is
-- 0001-01-01T00:00:00Z. outcome is the JSON {"deviceMethodResponse":…} of
-- a method job, or NULL.
CREATE TABLE device_jobs (
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
);
CREATE INDEX device_jobs_pending ON device_jobs (job_id, status);
