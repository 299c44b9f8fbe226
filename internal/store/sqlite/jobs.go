package sqlite

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
)

var _ job.Store = (*DB)(nil)

// jobColumns are the jobs columns scanJob reads, in order.
const jobColumns = `job_id, type, status, query_condition, created_time, start_time, end_time,
	max_execution_seconds, request, failure_reason, status_message, device_count,
	succeeded_count, failed_count, running_count, pending_count, started_time, herd, wave`

func jobNotFound(id string) error {
	return herd.Errorf(herd.ErrJobNotFound, "job %q does not exist", id)
}

func scanJob(row scanner) (*job.Record, error) {
	var (
		r                       job.Record
		created, start, request string
		end, started            sql.NullString
		failure, message, opts  sql.NullString
		st                      herd.DeviceJobStatistics
	)
	err := row.Scan(&r.JobID, &r.Type, &r.Status, &r.QueryCondition, &created, &start, &end,
		&r.MaxExecutionTimeInSeconds, &request, &failure, &message, &st.DeviceCount,
		&st.SucceededCount, &st.FailedCount, &st.RunningCount, &st.PendingCount, &started, &opts, &r.Wave)
	if err != nil {
		return nil, err
	}
	if r.Herd, err = job.DecodeOptions(opts.String); err != nil {
		return nil, fmt.Errorf("decode the herd options of job %q: %w", r.JobID, err)
	}
	c, s := parseTime(created), parseTime(start)
	r.CreatedTime, r.StartTime = &c, &s
	if end.Valid {
		e := parseTime(end.String)
		r.EndTime = &e
	}
	if started.Valid {
		r.Started = parseTime(started.String).Time
	}
	r.FailureReason, r.StatusMessage = failure.String, message.String
	r.DeviceJobStatistics = &st
	r.Request = json.RawMessage(request)
	if err := r.Decode(); err != nil {
		return nil, fmt.Errorf("decode job %q: %w", r.JobID, err)
	}
	return &r, nil
}

func stamp(t time.Time) string { return herd.NewTime(t).String() }

// CreateJob stores a new job whose condition compiles.
func (db *DB) CreateJob(ctx context.Context, r *job.Record) error {
	if _, err := query.CompileJobCondition(query.SQLite, r.QueryCondition, ""); err != nil {
		return query.AsHerdError(err)
	}
	res, err := db.write.ExecContext(ctx, `INSERT INTO jobs (job_id, type, status, query_condition,
		created_time, start_time, max_execution_seconds, request, herd, continuous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (job_id) DO NOTHING`,
		r.JobID, string(r.Type), string(r.Status), r.QueryCondition, r.CreatedTime.String(),
		r.StartTime.String(), r.MaxExecutionTimeInSeconds, string(r.Request), nullable(job.EncodeOptions(r.Herd)),
		r.Herd != nil && r.Herd.Continuous)
	if err != nil {
		return fmt.Errorf("create job %q: %w", r.JobID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return herd.Errorf(herd.ErrJobAlreadyExists, "a job with id %q already exists", r.JobID)
	}
	return nil
}

// Job returns one job.
func (db *DB) Job(ctx context.Context, id string) (*job.Record, error) {
	return getJob(ctx, db.read, id)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getJob(ctx context.Context, q queryer, id string) (*job.Record, error) {
	r, err := scanJob(q.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE job_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, jobNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %q: %w", id, err)
	}
	return r, nil
}

// ListJobs returns a page of jobs in creation order.
func (db *DB) ListJobs(ctx context.Context, f job.ListFilter) ([]*job.Record, string, error) {
	after, order := ">", ""
	if f.Newest {
		after, order = "<", " DESC"
	}
	where := []string{"1"}
	var args []any
	if f.Type != "" {
		where, args = append(where, "type = ?"), append(args, string(f.Type))
	}
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, string(f.Status))
	}
	if f.After != "" {
		created, id, err := decodeContinuation(f.After)
		if err != nil {
			return nil, "", err
		}
		where, args = append(where, "(created_time, job_id) "+after+" (?, ?)"), append(args, created, id)
	}
	args = append(args, f.Limit+1)
	rows, err := db.read.QueryContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE `+strings.Join(where, " AND ")+`
		ORDER BY created_time`+order+`, job_id`+order+` LIMIT ?`, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	out := []*job.Record{}
	for rows.Next() {
		r, err := scanJob(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	next := ""
	if len(out) > f.Limit {
		out = out[:f.Limit]
		last := out[len(out)-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(last.CreatedTime.String() + "\n" + last.JobID))
	}
	return out, next, nil
}

func decodeContinuation(token string) (created, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		var ok bool
		if created, id, ok = strings.Cut(string(b), "\n"); ok {
			return created, id, nil
		}
	}
	return "", "", herd.Errorf(herd.ErrArgumentInvalid, "the continuation token %q is not one this hub issued", token)
}

// ActiveJobs returns the jobs the engine looks after.
func (db *DB) ActiveJobs(ctx context.Context) ([]*job.Record, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+jobColumns+` FROM jobs
		WHERE status IN ('queued', 'scheduled', 'running', 'paused') OR (status IN ('cancelled', 'failed') AND end_time IS NULL)
		ORDER BY start_time, job_id`)
	if err != nil {
		return nil, fmt.Errorf("active jobs: %w", err)
	}
	defer rows.Close()
	var out []*job.Record
	for rows.Next() {
		r, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("active jobs: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ScheduleJob moves a queued job to scheduled.
func (db *DB) ScheduleJob(ctx context.Context, id string, now time.Time) error {
	_, err := db.write.ExecContext(ctx, `UPDATE jobs SET status = 'scheduled' WHERE job_id = ? AND status = 'queued'`, id)
	if err != nil {
		return fmt.Errorf("schedule job %q: %w", id, err)
	}
	return nil
}

// finishIfDone ends a started job whose devices are all done: a running
// or paused one completes, unless it is continuous (it runs until its
// deadline); a cancelled or aborted one (failed) ends.
func finishIfDone(ctx context.Context, tx *sql.Tx, id string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE jobs SET
		status = CASE WHEN status IN ('running', 'paused') THEN 'completed' ELSE status END,
		end_time = ?,
		status_message = CASE WHEN status_message IS NULL THEN
			succeeded_count || ' of ' || device_count || ' devices succeeded, ' || failed_count || ' failed'
			ELSE status_message END
		WHERE job_id = ? AND end_time IS NULL AND started_time IS NOT NULL
		AND (status IN ('cancelled', 'failed') OR status IN ('running', 'paused') AND NOT continuous)
		AND pending_count = 0 AND running_count = 0`, stamp(now), id)
	return err
}

// StartJob snapshots the target devices and starts the job.
func (db *DB) StartJob(ctx context.Context, id string, where *query.Query, now time.Time) (*job.Record, error) {
	cond, err := condition(where)
	if err != nil {
		return nil, err
	}
	var out *job.Record
	err = db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE jobs SET status = 'running', started_time = ?
			WHERE job_id = ? AND status IN ('queued', 'scheduled')`, stamp(now), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			var typ string
			if err := tx.QueryRowContext(ctx, `SELECT type FROM jobs WHERE job_id = ?`, id).Scan(&typ); err != nil {
				return err
			}
			zero, at := herd.Time{}.String(), stamp(now)
			args := append([]any{id, typ, zero, zero, at, at}, cond.Args...)
			res, err := tx.ExecContext(ctx, `INSERT INTO device_jobs (job_id, device_id, job_type, status,
				start_time, end_time, created_time, last_updated_time)
				SELECT ?, device_id, ?, 'pending', ?, ?, ?, ? FROM devices WHERE `+cond.Text, args...)
			if err != nil {
				return &conditionError{err}
			}
			n, _ := res.RowsAffected()
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET device_count = ?, pending_count = ? WHERE job_id = ?`, n, n, id); err != nil {
				return err
			}
			if err := finishIfDone(ctx, tx, id, now); err != nil {
				return err
			}
		}
		out, err = getJob(ctx, tx, id)
		return err
	})
	var ce *conditionError
	if errors.As(err, &ce) {
		return nil, herd.Errorf(herd.ErrArgumentInvalid, "the query condition could not be evaluated: %v", ce.err)
	}
	if err != nil {
		return nil, fmt.Errorf("start job %q: %w", id, err)
	}
	return out, nil
}

// conditionError is a failure of the compiled query condition itself.
type conditionError struct{ err error }

func (e *conditionError) Error() string { return e.err.Error() }

// FailJob ends a job that could not run.
func (db *DB) FailJob(ctx context.Context, id, reason string, now time.Time) error {
	_, err := db.write.ExecContext(ctx, `UPDATE jobs SET status = 'failed', failure_reason = ?, end_time = ?,
		started_time = coalesce(started_time, ?) WHERE job_id = ? AND end_time IS NULL`, reason, stamp(now), stamp(now), id)
	if err != nil {
		return fmt.Errorf("fail job %q: %w", id, err)
	}
	return nil
}

// CancelJob cancels a job that has not ended.
func (db *DB) CancelJob(ctx context.Context, id string, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "cancel", func(tx *sql.Tx, status herd.JobStatus, started bool) error {
		return stopJob(ctx, tx, id, status, started, herd.JobCancelled, "", now)
	})
}

// changeJob runs change on a job's status and start in one transaction and
// returns the job after; op names the change in an internal error.
func (db *DB) changeJob(ctx context.Context, id, op string, change func(tx *sql.Tx, status herd.JobStatus, started bool) error) (*job.Record, error) {
	var out *job.Record
	err := db.tx(ctx, func(tx *sql.Tx) error {
		status, started, err := jobState(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := change(tx, status, started); err != nil {
			return err
		}
		out, err = getJob(ctx, tx, id)
		return err
	})
	if err != nil {
		if herd.ErrorCodeOf(err) != herd.ErrInternal {
			return nil, err
		}
		return nil, fmt.Errorf("%s job %q: %w", op, id, err)
	}
	return out, nil
}

// stopJob cancels (to = cancelled) or aborts (to = failed, with reason) a
// job in status from: one that has not started ends at once; a started
// one's pending devices are canceled and it ends when its running ones
// finish. A job that has ended, or is ending, is left as it is.
func stopJob(ctx context.Context, tx *sql.Tx, id string, from herd.JobStatus, started bool, to herd.JobStatus, reason string, now time.Time) error {
	at := stamp(now)
	switch {
	case from == herd.JobQueued || from == herd.JobScheduled || from == herd.JobPaused && !started:
		_, err := tx.ExecContext(ctx, `UPDATE jobs SET status = ?, end_time = ?, failure_reason = nullif(?, ''),
			status_message = 'cancelled before it started' WHERE job_id = ?`, string(to), at, reason, id)
		return err
	case from == herd.JobRunning || from == herd.JobPaused:
		res, err := tx.ExecContext(ctx, `UPDATE device_jobs SET status = 'canceled', end_time = ?, last_updated_time = ?
			WHERE job_id = ? AND status = 'pending'`, at, at, id)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		if _, err = tx.ExecContext(ctx, `UPDATE jobs SET status = ?, failure_reason = nullif(?, ''), pending_count = pending_count - ?,
			failed_count = failed_count + ? WHERE job_id = ?`, string(to), reason, n, n, id); err != nil {
			return err
		}
		return finishIfDone(ctx, tx, id, now)
	}
	return nil
}

// jobState reads a job's status and whether it has started, for update.
func jobState(ctx context.Context, tx *sql.Tx, id string) (herd.JobStatus, bool, error) {
	var status string
	var started sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT status, started_time FROM jobs WHERE job_id = ?`, id).Scan(&status, &started)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, jobNotFound(id)
	}
	return herd.JobStatus(status), started.Valid, err
}

// AbortJob fails a job whose abort criterion fired.
func (db *DB) AbortJob(ctx context.Context, id, reason string, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "abort", func(tx *sql.Tx, status herd.JobStatus, started bool) error {
		if status != herd.JobRunning && status != herd.JobPaused {
			return nil
		}
		return stopJob(ctx, tx, id, status, started, herd.JobFailed, reason, now)
	})
}

// AdvanceWave moves a job's rollout to wave, pausing it with pause.
func (db *DB) AdvanceWave(ctx context.Context, id string, wave int, pause bool, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "advance the wave of", func(tx *sql.Tx, status herd.JobStatus, started bool) error {
		if status != herd.JobRunning && status != herd.JobPaused {
			return nil
		}
		_, err := tx.ExecContext(ctx, `UPDATE jobs SET wave = ?,
			status = CASE WHEN ? AND status = 'running' THEN 'paused' ELSE status END
			WHERE job_id = ? AND wave < ?`, wave, pause, id, wave)
		return err
	})
}

// PauseJob pauses a job that has not ended.
func (db *DB) PauseJob(ctx context.Context, id string, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "pause", func(tx *sql.Tx, status herd.JobStatus, started bool) error {
		if status != herd.JobQueued && status != herd.JobScheduled && status != herd.JobRunning {
			return nil
		}
		_, err := tx.ExecContext(ctx, `UPDATE jobs SET status = 'paused' WHERE job_id = ?`, id)
		return err
	})
}

// ResumeJob resumes a paused job: back to running, or to queued for the
// scheduler if it had not started; a job whose devices all finished
// completes.
func (db *DB) ResumeJob(ctx context.Context, id string, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "resume", func(tx *sql.Tx, status herd.JobStatus, started bool) error {
		if status != herd.JobPaused {
			return nil
		}
		to := herd.JobQueued
		if started {
			to = herd.JobRunning
		}
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET status = ? WHERE job_id = ?`, string(to), id); err != nil {
			return err
		}
		return finishIfDone(ctx, tx, id, now)
	})
}

// FailureCounts counts a job's device outcomes by failure type.
func (db *DB) FailureCounts(ctx context.Context, id string) (job.FailureCounts, error) {
	var c job.FailureCounts
	err := db.read.QueryRowContext(ctx, `SELECT
		coalesce(sum(status IN ('completed', 'failed')), 0),
		coalesce(sum(status = 'failed' AND error_code = ?), 0),
		coalesce(sum(status = 'failed' AND error_code = ?), 0),
		coalesce(sum(status = 'failed' AND coalesce(error_code, '') NOT IN (?, ?)
			OR status = 'completed' AND json_extract(outcome, '$.deviceMethodResponse.status') >= 400), 0)
		FROM device_jobs WHERE job_id = ?`,
		string(herd.ErrDeviceNotOnline), string(herd.ErrGatewayTimeout),
		string(herd.ErrDeviceNotOnline), string(herd.ErrGatewayTimeout), id).
		Scan(&c.Executed, &c.NotOnline, &c.TimedOut, &c.Failed)
	if err != nil {
		return c, fmt.Errorf("failure counts of job %q: %w", id, err)
	}
	return c, nil
}

// PendingDevices returns pending device ids after the cursor.
func (db *DB) PendingDevices(ctx context.Context, id, after string, limit int) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT device_id FROM device_jobs
		WHERE job_id = ? AND device_id > ? AND status = 'pending' ORDER BY device_id LIMIT ?`, id, after, limit)
	if err != nil {
		return nil, fmt.Errorf("pending devices of job %q: %w", id, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DueDevices returns the pending devices that may start now.
func (db *DB) DueDevices(ctx context.Context, id, after string, limit int, now time.Time, retries bool) ([]job.DueDevice, error) {
	minAttempts := 0
	if retries {
		minAttempts = 1
	}
	rows, err := db.read.QueryContext(ctx, `SELECT device_id, attempts FROM device_jobs
		WHERE job_id = ? AND device_id > ? AND status = 'pending' AND (retry_at IS NULL OR retry_at <= ?)
		AND attempts >= ? ORDER BY device_id LIMIT ?`, id, after, stamp(now), minAttempts, limit)
	if err != nil {
		return nil, fmt.Errorf("due devices of job %q: %w", id, err)
	}
	defer rows.Close()
	var out []job.DueDevice
	for rows.Next() {
		var d job.DueDevice
		if err := rows.Scan(&d.ID, &d.Attempts); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Retries returns the job's devices waiting for a retry.
func (db *DB) Retries(ctx context.Context, id string) (job.RetryState, error) {
	var rs job.RetryState
	var next sql.NullString
	err := db.read.QueryRowContext(ctx, `SELECT count(*), min(retry_at) FROM device_jobs
		WHERE job_id = ? AND status = 'pending' AND attempts > 0`, id).Scan(&rs.Retrying, &next)
	if err != nil {
		return rs, fmt.Errorf("retries of job %q: %w", id, err)
	}
	if next.Valid {
		rs.Next = parseTime(next.String).Time
	}
	return rs, nil
}

// ClaimDevices moves devices from pending to running.
func (db *DB) ClaimDevices(ctx context.Context, id string, deviceIDs []string, now time.Time) ([]string, error) {
	list, err := json.Marshal(deviceIDs)
	if err != nil {
		return nil, err
	}
	var out []string
	err = db.tx(ctx, func(tx *sql.Tx) error {
		if err := requireRunning(ctx, tx, id); err != nil {
			return err
		}
		at := stamp(now)
		rows, err := tx.QueryContext(ctx, `UPDATE device_jobs SET status = 'running', start_time = ?, last_updated_time = ?,
			attempts = attempts + 1, retry_at = NULL WHERE job_id = ? AND status = 'pending' AND device_id IN (SELECT value FROM json_each(?))
			RETURNING device_id`, at, at, id, string(list))
		if err != nil {
			return err
		}
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				rows.Close()
				return err
			}
			out = append(out, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET pending_count = pending_count - ?, running_count = running_count + ?
			WHERE job_id = ?`, len(out), len(out), id)
		return err
	})
	if errors.Is(err, job.ErrNotRunning) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("claim devices of job %q: %w", id, err)
	}
	return out, nil
}

// requireRunning returns job.ErrNotRunning unless the job is running
// (under SQLite's single writer, until the transaction ends).
func requireRunning(ctx context.Context, tx *sql.Tx, id string) error {
	var status string
	err := tx.QueryRowContext(ctx, `SELECT status FROM jobs WHERE job_id = ?`, id).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) || err == nil && status != string(herd.JobRunning) {
		return job.ErrNotRunning
	}
	return err
}

// outcomeRow is one outcome as FinishDevices passes it to SQL.
type outcomeRow struct {
	D string  `json:"d"`
	O *string `json:"o"`
	C *string `json:"c"`
	E *string `json:"e"`
	R *string `json:"r"`
}

// transition is a change of device record status (to pending: a retry).
type transition struct {
	from string
	to   herd.DeviceJobStatus
}

// outcomeKey groups outcomes that write the same values.
type outcomeKey struct {
	transition
	outcome, code, desc, retryAt string
	hasOutcome, hasErr           bool
}

// maxOutcomeGroups is how many distinct outcomes a batch may have and
// still be written one statement per outcome (the common case: most
// devices answer alike); more go through a keyed temporary table.
const maxOutcomeGroups = 8

// outcomeJSON encodes a method job's device outcome.
func outcomeJSON(r *herd.MethodResult) (string, error) {
	payload := []byte(r.Payload)
	if len(payload) == 0 {
		payload = []byte("null")
	} else if !json.Valid(payload) {
		b, err := json.Marshal(string(payload))
		if err != nil {
			return "", err
		}
		payload = b
	}
	return `{"deviceMethodResponse":{"status":` + strconv.Itoa(r.Status) + `,"payload":` + string(payload) + `}}`, nil
}

// groupOutcomes sorts outcomes by the values they write. With retry
// false, retries are written as the failures they are.
func groupOutcomes(outcomes []job.Outcome, retry bool) (map[outcomeKey][]string, map[transition][]outcomeRow, error) {
	groups := map[outcomeKey][]string{}
	byTransition := map[transition][]outcomeRow{}
	for _, o := range outcomes {
		k := outcomeKey{transition: transition{"running", o.Status}}
		if o.FromPending {
			k.from = "pending"
		}
		row := outcomeRow{D: o.DeviceID}
		if !o.RetryAt.IsZero() && retry {
			k.to, k.retryAt = herd.DeviceJobPending, stamp(o.RetryAt)
			row.R = &k.retryAt
		}
		if o.Response != nil {
			s, err := outcomeJSON(o.Response)
			if err != nil {
				return nil, nil, fmt.Errorf("encode outcome of %q: %w", o.DeviceID, err)
			}
			k.outcome, k.hasOutcome, row.O = s, true, &s
		}
		if o.Error != nil {
			k.code, k.desc, k.hasErr = o.Error.Code, o.Error.Description, true
			row.C, row.E = &o.Error.Code, &o.Error.Description
		}
		groups[k] = append(groups[k], o.DeviceID)
		byTransition[k.transition] = append(byTransition[k.transition], row)
	}
	return groups, byTransition, nil
}

// FinishDevices records outcomes in one transaction.
func (db *DB) FinishDevices(ctx context.Context, id string, outcomes []job.Outcome, now time.Time) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		retry := false
		if job.HasRetry(outcomes) {
			// A job that is ending (cancelled, aborted) retries nothing.
			var status string
			if err := tx.QueryRowContext(ctx, `SELECT status FROM jobs WHERE job_id = ?`, id).Scan(&status); err != nil {
				return err
			}
			retry = status == string(herd.JobRunning) || status == string(herd.JobPaused)
		}
		groups, byTransition, err := groupOutcomes(outcomes, retry)
		if err != nil {
			return err
		}
		at := stamp(now)
		moved := map[transition]int64{}
		if len(groups) <= maxOutcomeGroups {
			for k, ids := range groups {
				list, err := json.Marshal(ids)
				if err != nil {
					return err
				}
				var outcome, code, desc, retryAt any
				if k.hasOutcome {
					outcome = k.outcome
				}
				if k.hasErr {
					code, desc = k.code, k.desc
				}
				if k.retryAt != "" {
					retryAt = k.retryAt
				}
				res, err := tx.ExecContext(ctx, `UPDATE device_jobs SET status = ?, end_time = ?, last_updated_time = ?,
					start_time = CASE WHEN status = 'pending' THEN ? ELSE start_time END,
					attempts = attempts + (status = 'pending'), retry_at = ?,
					outcome = ?, error_code = ?, error_description = ?
					WHERE job_id = ? AND status = ? AND device_id IN (SELECT value FROM json_each(?))`,
					string(k.to), at, at, at, retryAt, outcome, code, desc, id, k.from, string(list))
				if err != nil {
					return err
				}
				n, _ := res.RowsAffected()
				moved[k.transition] += n
			}
		} else {
			for k, rows := range byTransition {
				n, err := finishThroughTemp(ctx, tx, id, k, rows, at)
				if err != nil {
					return err
				}
				moved[k] += n
			}
		}
		for k, n := range moved {
			if k.from == "pending" && k.to == herd.DeviceJobPending {
				continue // a retry of a device that stays pending
			}
			from := "running_count"
			if k.from == "pending" {
				from = "pending_count"
			}
			to := "failed_count"
			switch k.to {
			case herd.DeviceJobCompleted:
				to = "succeeded_count"
			case herd.DeviceJobPending:
				to = "pending_count"
			}
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET `+from+` = `+from+` - ?, `+to+` = `+to+` + ? WHERE job_id = ?`, n, n, id); err != nil {
				return err
			}
		}
		return finishIfDone(ctx, tx, id, now)
	})
	if err != nil {
		return fmt.Errorf("record outcomes of job %q: %w", id, err)
	}
	return nil
}

// finishThroughTemp records outcomes of one transition that differ from
// device to device. They go through a keyed temporary table: joined
// directly with json_each, SQLite would walk all of the job's records for
// every batch.
func finishThroughTemp(ctx context.Context, tx *sql.Tx, id string, k transition, rows []outcomeRow, at string) (int64, error) {
	list, err := json.Marshal(rows)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS job_outcomes
		(d TEXT PRIMARY KEY, o TEXT, c TEXT, e TEXT, r TEXT) WITHOUT ROWID`); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM temp.job_outcomes`); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO temp.job_outcomes
		SELECT value ->> '$.d', value ->> '$.o', value ->> '$.c', value ->> '$.e', value ->> '$.r' FROM json_each(?)`, string(list)); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE device_jobs SET status = ?, end_time = ?, last_updated_time = ?,
		start_time = CASE WHEN status = 'pending' THEN ? ELSE start_time END,
		attempts = attempts + (status = 'pending'),
		(outcome, error_code, error_description, retry_at) = (SELECT o, c, e, r FROM temp.job_outcomes WHERE d = device_jobs.device_id)
		WHERE job_id = ? AND status = ? AND device_id IN (SELECT d FROM temp.job_outcomes)`,
		string(k.to), at, at, at, id, k.from)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ExpireJob ends a job at its deadline.
func (db *DB) ExpireJob(ctx context.Context, id string, end herd.JobStatus, reason string, devErr herd.DeviceJobError, now time.Time) error {
	if end != herd.JobCompleted {
		end = herd.JobFailed
	} else {
		reason = ""
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		at := stamp(now)
		res, err := tx.ExecContext(ctx, `UPDATE device_jobs SET status = 'failed', end_time = ?, last_updated_time = ?,
			error_code = ?, error_description = ? WHERE job_id = ? AND status IN ('pending', 'running')`,
			at, at, devErr.Code, devErr.Description, id)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET
			failed_count = failed_count + ?, pending_count = 0, running_count = 0, end_time = ?,
			failure_reason = CASE WHEN status IN ('running', 'paused') THEN nullif(?, '') ELSE failure_reason END,
			status_message = succeeded_count || ' of ' || device_count || ' devices succeeded, ' || (failed_count + ?) || ' failed',
			status = CASE WHEN status IN ('running', 'paused') THEN ? ELSE status END
			WHERE job_id = ? AND end_time IS NULL`, n, at, reason, n, string(end), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("expire job %q: %w", id, err)
	}
	return nil
}

// AddDevices targets the devices that started matching a continuous job.
func (db *DB) AddDevices(ctx context.Context, id string, where *query.Query, deviceIDs []string, now time.Time) (int64, error) {
	cond, err := condition(where)
	if err != nil {
		return 0, err
	}
	text, args := cond.Text, cond.Args
	if deviceIDs != nil {
		list, err := json.Marshal(deviceIDs)
		if err != nil {
			return 0, err
		}
		text = `device_id IN (SELECT value FROM json_each(?)) AND (` + text + `)`
		args = append([]any{string(list)}, args...)
	}
	var added int64
	err = db.tx(ctx, func(tx *sql.Tx) error {
		var typ string
		err := tx.QueryRowContext(ctx, `SELECT type FROM jobs WHERE job_id = ? AND continuous
			AND status IN ('running', 'paused') AND end_time IS NULL`, id).Scan(&typ)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // not (or no longer) taking devices
		}
		if err != nil {
			return err
		}
		zero, at := herd.Time{}.String(), stamp(now)
		// WHERE is never empty here, so ON CONFLICT is not read as a join
		// constraint of the SELECT.
		res, err := tx.ExecContext(ctx, `INSERT INTO device_jobs (job_id, device_id, job_type, status,
			start_time, end_time, created_time, last_updated_time)
			SELECT ?, device_id, ?, 'pending', ?, ?, ?, ? FROM devices WHERE `+text+`
			ON CONFLICT (job_id, device_id) DO NOTHING`, append([]any{id, typ, zero, zero, at, at}, args...)...)
		if err != nil {
			return &conditionError{err}
		}
		if added, _ = res.RowsAffected(); added == 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET device_count = device_count + ?, pending_count = pending_count + ?
			WHERE job_id = ?`, added, added, id)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("add devices to job %q: %w", id, err)
	}
	return added, nil
}

// InterruptRunning fails the running devices of a job.
func (db *DB) InterruptRunning(ctx context.Context, id string, devErr herd.DeviceJobError, now time.Time) (int, error) {
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		at := stamp(now)
		res, err := tx.ExecContext(ctx, `UPDATE device_jobs SET status = 'failed', end_time = ?, last_updated_time = ?,
			error_code = ?, error_description = ? WHERE job_id = ? AND status = 'running'`,
			at, at, devErr.Code, devErr.Description, id)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET running_count = running_count - ?, failed_count = failed_count + ?
			WHERE job_id = ?`, n, n, id); err != nil {
			return err
		}
		return finishIfDone(ctx, tx, id, now)
	})
	if err != nil {
		return 0, fmt.Errorf("interrupt running devices of job %q: %w", id, err)
	}
	return int(n), nil
}

// purgeChunk is how many device records one purge transaction deletes, so
// that purging a large job never holds the writer for long.
const purgeChunk = 20000

// PurgeJobs deletes jobs that ended before the given time.
func (db *DB) PurgeJobs(ctx context.Context, endedBefore time.Time) (int, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT job_id FROM jobs WHERE end_time IS NOT NULL AND end_time < ?`, stamp(endedBefore))
	if err != nil {
		return 0, fmt.Errorf("find old jobs: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		for {
			res, err := db.write.ExecContext(ctx, `DELETE FROM device_jobs WHERE job_id = ? AND device_id IN
				(SELECT device_id FROM device_jobs WHERE job_id = ? LIMIT ?)`, id, id, purgeChunk)
			if err != nil {
				return 0, fmt.Errorf("purge job %q: %w", id, err)
			}
			if n, _ := res.RowsAffected(); n < purgeChunk {
				break
			}
		}
		if _, err := db.write.ExecContext(ctx, `DELETE FROM jobs WHERE job_id = ?`, id); err != nil {
			return 0, fmt.Errorf("purge job %q: %w", id, err)
		}
	}
	return len(ids), nil
}

// EndedDevices returns the records one write ended, after cursor.
func (db *DB) EndedDevices(ctx context.Context, id string, sel job.EndedSelection, cursor string, limit int) ([]herd.DeviceJob, error) {
	text := `SELECT ` + deviceJobColumns + ` FROM device_jobs WHERE job_id = ? AND device_id > ? AND end_time = ?
		AND status IN ('completed', 'failed', 'canceled')`
	args := []any{id, max(cursor, sel.After), stamp(sel.At)}
	if sel.Last != "" {
		text, args = text+` AND device_id <= ?`, append(args, sel.Last)
	}
	if sel.IDs != nil {
		list, err := json.Marshal(sel.IDs)
		if err != nil {
			return nil, err
		}
		text, args = text+` AND device_id IN (SELECT value FROM json_each(?))`, append(args, string(list))
	}
	rows, err := db.read.QueryContext(ctx, text+` ORDER BY device_id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("ended device records of job %q: %w", id, err)
	}
	return collectDeviceJobs(rows)
}

// DeviceJobs returns a job's device records in device order (for tests and
// tools; clients read them with SELECT * FROM devices.jobs).
func (db *DB) DeviceJobs(ctx context.Context, id string) ([]herd.DeviceJob, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+deviceJobColumns+`
		FROM device_jobs WHERE job_id = ? ORDER BY device_id`, id)
	if err != nil {
		return nil, fmt.Errorf("device records of job %q: %w", id, err)
	}
	return collectDeviceJobs(rows)
}

// collectDeviceJobs reads deviceJobColumns rows and closes them.
func collectDeviceJobs(rows *sql.Rows) ([]herd.DeviceJob, error) {
	defer rows.Close()
	var out []herd.DeviceJob
	for rows.Next() {
		d, err := scanDeviceJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	return out, rows.Err()
}
