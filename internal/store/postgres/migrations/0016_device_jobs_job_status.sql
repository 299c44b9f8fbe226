-- The planner took a job's share of device_jobs and the share of pending
-- records to be independent, and had no statistics for the retry columns
-- that a page of due devices also filters on (attempts, retry_at): after
-- a 100,000-device job's snapshot beside finished jobs it expected ~1 %
-- of the job's remaining records to be due where all were, and for each
-- page of DueDevices read every remaining record of the job and sorted
-- them (a bitmap scan, quadratic in the job's size) instead of walking
-- the primary key. A list of the most common (job_id, status) pairs gives
-- it the job's own share, and StartJob's ANALYZE now reads the retry
-- columns too, at the small statistics target of job_id and status
-- (migration 0011), which keeps its sample at 3,000 rows.
CREATE STATISTICS device_jobs_job_status (mcv) ON job_id, status FROM device_jobs;
ALTER TABLE device_jobs ALTER COLUMN attempts SET STATISTICS 10, ALTER COLUMN retry_at SET STATISTICS 10;
