package postgres

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
)

var _ job.Store = (*DB)(nil)

// jobColumns are the jobs columns scanJob reads, in order.
const jobColumns = `job_id, type, status, query_condition, created_time, start_time, end_time,
	max_execution_seconds, request, failure_reason, status_message, device_count,
	succeeded_count, failed_count, running_count, pending_count, started_time, herd, wave,
	coalesce(lease_node, ''), lease_epoch, lease_until`

func jobNotFound(id string) error {
	return herd.Errorf(herd.ErrJobNotFound, "job %q does not exist", id)
}

func stamp(t time.Time) string { return herd.NewTime(t).String() }

func scanJob(row pgx.Row) (*job.Record, error) {
	var (
		r                       job.Record
		typ, status             string
		created, start, request string
		end, started            *string
		failure, message, opts  *string
		st                      herd.DeviceJobStatistics
		leaseUntil              *string
	)
	err := row.Scan(&r.JobID, &typ, &status, &r.QueryCondition, &created, &start, &end,
		&r.MaxExecutionTimeInSeconds, &request, &failure, &message, &st.DeviceCount,
		&st.SucceededCount, &st.FailedCount, &st.RunningCount, &st.PendingCount, &started, &opts, &r.Wave,
		&r.Lease.Node, &r.Lease.Epoch, &leaseUntil)
	if err != nil {
		return nil, err
	}
	if opts != nil {
		if r.Herd, err = job.DecodeOptions(*opts); err != nil {
			return nil, fmt.Errorf("decode the herd options of job %q: %w", r.JobID, err)
		}
	}
	r.Type, r.Status = herd.JobType(typ), herd.JobStatus(status)
	c, s := parseTime(created), parseTime(start)
	r.CreatedTime, r.StartTime = &c, &s
	if end != nil {
		e := parseTime(*end)
		r.EndTime = &e
	}
	if started != nil {
		r.Started = parseTime(*started).Time
	}
	if failure != nil {
		r.FailureReason = *failure
	}
	if leaseUntil != nil {
		r.Lease.Until = parseTime(*leaseUntil).Time
	}
	if message != nil {
		r.StatusMessage = *message
	}
	r.DeviceJobStatistics = &st
	r.Request = json.RawMessage(request)
	if err := r.Decode(); err != nil {
		return nil, fmt.Errorf("decode job %q: %w", r.JobID, err)
	}
	return &r, nil
}

// condition compiles a query's WHERE clause in this store's dialect; its
// placeholders are $1…$n, and p continues after them.
func condition(q *query.Query) (query.SQL, *placeholders, error) {
	c, err := query.CompileCondition(query.Postgres, q, "")
	if err != nil {
		return c, nil, query.AsHerdError(err)
	}
	return c, &placeholders{args: append([]any(nil), c.Args...)}, nil
}

// CreateJob stores a new job whose condition compiles.
func (db *DB) CreateJob(ctx context.Context, r *job.Record) error {
	if _, err := query.CompileJobCondition(query.Postgres, r.QueryCondition, ""); err != nil {
		return query.AsHerdError(err)
	}
	tag, err := db.pool.Exec(ctx, `INSERT INTO jobs (job_id, type, status, query_condition,
		created_time, start_time, max_execution_seconds, request, herd, continuous) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (job_id) DO NOTHING`,
		r.JobID, string(r.Type), string(r.Status), r.QueryCondition, r.CreatedTime.String(),
		r.StartTime.String(), r.MaxExecutionTimeInSeconds, string(r.Request), nullable(job.EncodeOptions(r.Herd)),
		r.Herd != nil && r.Herd.Continuous)
	if err != nil {
		return fmt.Errorf("create job %q: %w", r.JobID, err)
	}
	if tag.RowsAffected() == 0 {
		return herd.Errorf(herd.ErrJobAlreadyExists, "a job with id %q already exists", r.JobID)
	}
	return nil
}

// Job returns one job.
func (db *DB) Job(ctx context.Context, id string) (*job.Record, error) {
	return getJob(ctx, db.pool, id)
}

type queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func getJob(ctx context.Context, q queryer, id string) (*job.Record, error) {
	r, err := scanJob(q.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE job_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	where := []string{"TRUE"}
	var p placeholders
	if f.Type != "" {
		where = append(where, "type = "+p.add(string(f.Type)))
	}
	if f.Status != "" {
		where = append(where, "status = "+p.add(string(f.Status)))
	}
	if f.After != "" {
		created, id, err := decodeContinuation(f.After)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_time, job_id) "+after+" ("+p.add(created)+", "+p.add(id)+")")
	}
	limit := p.add(f.Limit + 1)
	rows, err := db.pool.Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE `+strings.Join(where, " AND ")+`
		ORDER BY created_time`+order+`, job_id`+order+` LIMIT `+limit, p.args...)
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
	rows, err := db.pool.Query(ctx, `SELECT `+jobColumns+` FROM jobs
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
	if _, err := db.pool.Exec(ctx, `UPDATE jobs SET status = 'scheduled' WHERE job_id = $1 AND status = 'queued'`, id); err != nil {
		return fmt.Errorf("schedule job %q: %w", id, err)
	}
	return nil
}

// finishIfDone ends a started job whose devices are all done: a running
// or paused one completes; a cancelled or aborted one (failed) ends.
func finishIfDone(ctx context.Context, tx pgx.Tx, id string, now time.Time) error {
	_, err := tx.Exec(ctx, finishIfDoneSQL, stamp(now), id)
	return err
}

// finishIfDoneSQL ends job $2 at $1 if nothing of it is left to run.
const finishIfDoneSQL = `UPDATE jobs SET
	status = CASE WHEN status IN ('running', 'paused') THEN 'completed' ELSE status END,
	end_time = $1,
	status_message = CASE WHEN status_message IS NULL THEN
		succeeded_count || ' of ' || device_count || ' devices succeeded, ' || failed_count || ' failed'
		ELSE status_message END
	WHERE job_id = $2 AND end_time IS NULL AND started_time IS NOT NULL
	AND (status IN ('cancelled', 'failed') OR status IN ('running', 'paused') AND NOT continuous)
	AND pending_count = 0 AND running_count = 0`

// StartJob snapshots the target devices and starts the job.
func (db *DB) StartJob(ctx context.Context, id string, where *query.Query, now time.Time) (*job.Record, error) {
	cond, p, err := condition(where)
	if err != nil {
		return nil, err
	}
	var out *job.Record
	err = db.tx(ctx, func(tx pgx.Tx) error {
		if err := db.fenceTx(ctx, tx, id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE jobs SET status = 'running', started_time = $1
			WHERE job_id = $2 AND status IN ('queued', 'scheduled')`, stamp(now), id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			var typ string
			if err := tx.QueryRow(ctx, `SELECT type FROM jobs WHERE job_id = $1`, id).Scan(&typ); err != nil {
				return err
			}
			zero, at := herd.Time{}.String(), stamp(now)
			q := *p
			text := `INSERT INTO device_jobs (job_id, device_id, job_type, status,
				start_time, end_time, created_time, last_updated_time)
				SELECT ` + q.add(id) + `, device_id, ` + q.add(typ) + `, 'pending', ` + q.add(zero) + `, ` + q.add(zero) + `, ` +
				q.add(at) + `, ` + q.add(at) + ` FROM devices WHERE ` + cond.Text
			tag, err := tx.Exec(ctx, text, q.args...)
			if err != nil {
				return &conditionError{err}
			}
			n := tag.RowsAffected()
			// The planner must know how many records the job has: with
			// the statistics of before the snapshot (a few rows, or none)
			// it reads every remaining record of the job to pick each
			// batch, quadratic in the job's size. ANALYZE samples a fixed
			// number of rows, whatever the table's size; only the columns
			// the batches filter on, whose small statistics target keeps
			// the sample small (migrations 0011 and 0016), and with them
			// the (job_id, status) pairs that tell a job's pending share.
			if n >= analyzeAfter {
				if _, err := tx.Exec(ctx, `ANALYZE device_jobs (job_id, status, attempts, retry_at)`); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `UPDATE jobs SET device_count = $1, pending_count = $1 WHERE job_id = $2`, n, id); err != nil {
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

// analyzeAfter is the size of a job's snapshot from which StartJob
// refreshes the statistics of device_jobs.
const analyzeAfter = 1000

// conditionError is a failure of the compiled query condition itself.
type conditionError struct{ err error }

func (e *conditionError) Error() string { return e.err.Error() }

// FailJob ends a job that could not run.
func (db *DB) FailJob(ctx context.Context, id, reason string, now time.Time) error {
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if err := db.fenceTx(ctx, tx, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE jobs SET status = 'failed', failure_reason = $1, end_time = $2,
			started_time = coalesce(started_time, $2) WHERE job_id = $3 AND end_time IS NULL`, reason, stamp(now), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("fail job %q: %w", id, err)
	}
	return nil
}

// CancelJob cancels a job that has not ended.
func (db *DB) CancelJob(ctx context.Context, id string, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "cancel", func(tx pgx.Tx, status herd.JobStatus, started bool) error {
		return stopJob(ctx, tx, id, status, started, herd.JobCancelled, "", now)
	})
}

// changeJob runs change on a job's status and start in one transaction and
// returns the job after; op names the change in an internal error.
func (db *DB) changeJob(ctx context.Context, id, op string, change func(tx pgx.Tx, status herd.JobStatus, started bool) error) (*job.Record, error) {
	var out *job.Record
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if err := db.fenceTx(ctx, tx, id); err != nil {
			return err
		}
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
func stopJob(ctx context.Context, tx pgx.Tx, id string, from herd.JobStatus, started bool, to herd.JobStatus, reason string, now time.Time) error {
	at := stamp(now)
	switch {
	case from == herd.JobQueued || from == herd.JobScheduled || from == herd.JobPaused && !started:
		_, err := tx.Exec(ctx, `UPDATE jobs SET status = $1, end_time = $2, failure_reason = nullif($3, ''),
			status_message = 'cancelled before it started' WHERE job_id = $4`, string(to), at, reason, id)
		return err
	case from == herd.JobRunning || from == herd.JobPaused:
		tag, err := tx.Exec(ctx, `UPDATE device_jobs SET status = 'canceled', end_time = $1, last_updated_time = $1
			WHERE job_id = $2 AND status = 'pending'`, at, id)
		if err != nil {
			return err
		}
		n := tag.RowsAffected()
		if _, err = tx.Exec(ctx, `UPDATE jobs SET status = $1, failure_reason = nullif($2, ''), pending_count = pending_count - $3,
			failed_count = failed_count + $3 WHERE job_id = $4`, string(to), reason, n, id); err != nil {
			return err
		}
		return finishIfDone(ctx, tx, id, now)
	}
	return nil
}

// jobState reads a job's status and whether it has started, locking its
// row for the transaction.
func jobState(ctx context.Context, tx pgx.Tx, id string) (herd.JobStatus, bool, error) {
	var status string
	var started *string
	err := tx.QueryRow(ctx, `SELECT status, started_time FROM jobs WHERE job_id = $1 FOR UPDATE`, id).Scan(&status, &started)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, jobNotFound(id)
	}
	return herd.JobStatus(status), started != nil, err
}

// AbortJob fails a job whose abort criterion fired.
func (db *DB) AbortJob(ctx context.Context, id, reason string, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "abort", func(tx pgx.Tx, status herd.JobStatus, started bool) error {
		if status != herd.JobRunning && status != herd.JobPaused {
			return nil
		}
		return stopJob(ctx, tx, id, status, started, herd.JobFailed, reason, now)
	})
}

// AdvanceWave moves a job's rollout to wave, pausing it with pause.
func (db *DB) AdvanceWave(ctx context.Context, id string, wave int, pause bool, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "advance the wave of", func(tx pgx.Tx, status herd.JobStatus, started bool) error {
		if status != herd.JobRunning && status != herd.JobPaused {
			return nil
		}
		_, err := tx.Exec(ctx, `UPDATE jobs SET wave = $1,
			status = CASE WHEN $2 AND status = 'running' THEN 'paused' ELSE status END
			WHERE job_id = $3 AND wave < $1`, wave, pause, id)
		return err
	})
}

// PauseJob pauses a job that has not ended.
func (db *DB) PauseJob(ctx context.Context, id string, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "pause", func(tx pgx.Tx, status herd.JobStatus, started bool) error {
		if status != herd.JobQueued && status != herd.JobScheduled && status != herd.JobRunning {
			return nil
		}
		_, err := tx.Exec(ctx, `UPDATE jobs SET status = 'paused' WHERE job_id = $1`, id)
		return err
	})
}

// ResumeJob resumes a paused job: back to running, or to queued for the
// scheduler if it had not started; a job whose devices all finished
// completes.
func (db *DB) ResumeJob(ctx context.Context, id string, now time.Time) (*job.Record, error) {
	return db.changeJob(ctx, id, "resume", func(tx pgx.Tx, status herd.JobStatus, started bool) error {
		if status != herd.JobPaused {
			return nil
		}
		to := herd.JobQueued
		if started {
			to = herd.JobRunning
		}
		if _, err := tx.Exec(ctx, `UPDATE jobs SET status = $1 WHERE job_id = $2`, string(to), id); err != nil {
			return err
		}
		return finishIfDone(ctx, tx, id, now)
	})
}

// FailureCounts counts a job's device outcomes by failure type.
func (db *DB) FailureCounts(ctx context.Context, id string) (job.FailureCounts, error) {
	var c job.FailureCounts
	err := db.pool.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE status IN ('completed', 'failed')),
		count(*) FILTER (WHERE status = 'failed' AND error_code = $1),
		count(*) FILTER (WHERE status = 'failed' AND error_code = $2),
		count(*) FILTER (WHERE status = 'failed' AND coalesce(error_code, '') NOT IN ($1, $2)
			OR status = 'completed' AND (outcome::jsonb #>> '{deviceMethodResponse,status}')::numeric >= 400)
		FROM device_jobs WHERE job_id = $3`,
		string(herd.ErrDeviceNotOnline), string(herd.ErrGatewayTimeout), id).
		Scan(&c.Executed, &c.NotOnline, &c.TimedOut, &c.Failed)
	if err != nil {
		return c, fmt.Errorf("failure counts of job %q: %w", id, err)
	}
	return c, nil
}

// PendingDevices returns pending device ids after the cursor.
func (db *DB) PendingDevices(ctx context.Context, id, after string, limit int) ([]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT device_id FROM device_jobs
		WHERE job_id = $1 AND device_id > $2 AND status = 'pending' ORDER BY job_id, device_id LIMIT $3`, id, after, limit)
	if err != nil {
		return nil, fmt.Errorf("pending devices of job %q: %w", id, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("pending devices of job %q: %w", id, err)
	}
	return ids, nil
}

// dueSQL reads up to $4 pending records of job $1 after device $2 that
// are due at $3 and have made at least $5 attempts, in device order. It
// walks the primary key; migration 0016 keeps the planner from expecting
// too few of the job's records to be pending for that.
const dueSQL = `SELECT device_id, attempts FROM device_jobs
	WHERE job_id = $1 AND device_id > $2 AND status = 'pending' AND (retry_at IS NULL OR retry_at <= $3)
	AND attempts >= $5 ORDER BY job_id, device_id LIMIT $4`

// DueDevices returns the pending devices that may start now.
func (db *DB) DueDevices(ctx context.Context, id, after string, limit int, now time.Time, retries bool) ([]job.DueDevice, error) {
	minAttempts := 0
	if retries {
		minAttempts = 1
	}
	rows, err := db.pool.Query(ctx, dueSQL, id, after, stamp(now), limit, minAttempts)
	if err != nil {
		return nil, fmt.Errorf("due devices of job %q: %w", id, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (job.DueDevice, error) {
		var d job.DueDevice
		return d, row.Scan(&d.ID, &d.Attempts)
	})
	if err != nil {
		return nil, fmt.Errorf("due devices of job %q: %w", id, err)
	}
	return out, nil
}

// Retries returns the job's devices waiting for a retry.
func (db *DB) Retries(ctx context.Context, id string) (job.RetryState, error) {
	var rs job.RetryState
	var next *string
	err := db.pool.QueryRow(ctx, `SELECT count(*), min(retry_at) FROM device_jobs
		WHERE job_id = $1 AND status = 'pending' AND attempts > 0`, id).Scan(&rs.Retrying, &next)
	if err != nil {
		return rs, fmt.Errorf("retries of job %q: %w", id, err)
	}
	if next != nil {
		rs.Next = parseTime(*next).Time
	}
	return rs, nil
}

// ClaimDevices moves devices from pending to running.
//
// One round trip: the first statement locks the job's row until commit
// (a pause waits for this claim, or this claim sees it) and plans the
// rest generically (genericPlanning); the claim moves nothing unless the
// job is running.
func (db *DB) ClaimDevices(ctx context.Context, id string, deviceIDs []string, now time.Time) ([]string, error) {
	b := &pgx.Batch{}
	db.fenceBatch(b, id)
	b.Queue(lockRunningSQL, id)
	b.Queue(claimSQL, stamp(now), id, deviceIDs)
	var out []string
	running := false
	err := db.batch(ctx, b, func(br pgx.BatchResults) error {
		if err := db.skipFence(br); err != nil {
			return err
		}
		var status string
		err := br.QueryRow().Scan(&status, nil)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		running = status == string(herd.JobRunning)
		rows, err := br.Query()
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim devices of job %q: %w", id, err)
	}
	if !running {
		return nil, job.ErrNotRunning
	}
	return out, nil
}

// lockRunningSQL reads the status of job $1 and locks its row until
// commit, and makes the rest of the transaction plan generically
// (genericPlanning).
const lockRunningSQL = `SELECT status, ` + genericPlanning + ` FROM jobs WHERE job_id = $1 FOR UPDATE`

// claimSQL moves the listed devices ($3) of job $2 from pending to
// running at $1 if the job is running, moves the job's counts with them,
// and returns the devices it moved.
const claimSQL = `WITH claimed AS (
		UPDATE device_jobs SET status = 'running', start_time = $1, last_updated_time = $1,
			attempts = attempts + 1, retry_at = NULL
		WHERE job_id = $2 AND status = 'pending' AND device_id = ANY($3)
			AND EXISTS (SELECT FROM jobs WHERE job_id = $2 AND status = 'running')
		RETURNING device_id
	), counted AS (
		UPDATE jobs SET pending_count = pending_count - (SELECT count(*) FROM claimed),
			running_count = running_count + (SELECT count(*) FROM claimed)
		WHERE job_id = $2 AND EXISTS (SELECT FROM claimed)
	)
	SELECT device_id FROM claimed`

// finishSQL records the outcomes of the listed devices ($3, with the
// outcomes, error codes, descriptions and retry times in $4, $5, $6 and
// $9) of job $7 whose status is $8: status $1 at $2.
const finishSQL = `UPDATE device_jobs dj SET status = $1, end_time = $2, last_updated_time = $2,
	start_time = CASE WHEN dj.status = 'pending' THEN $2 ELSE dj.start_time END,
	attempts = dj.attempts + CASE WHEN dj.status = 'pending' THEN 1 ELSE 0 END, retry_at = o.retry_at,
	outcome = o.outcome, error_code = o.code, error_description = o.descr
	FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $9::text[]) AS o(id, outcome, code, descr, retry_at)
	WHERE dj.job_id = $7 AND dj.device_id = ANY($3) AND dj.status = $8 AND dj.device_id = o.id`

// finishCountedSQL is finishSQL moving the job's counts with the records
// it changes, from column %[1]s to column %[2]s.
const finishCountedSQL = `WITH finished AS (` + finishSQL + ` RETURNING 1)
	UPDATE jobs SET %[1]s = %[1]s - (SELECT count(*) FROM finished), %[2]s = %[2]s + (SELECT count(*) FROM finished)
	WHERE job_id = $7 AND EXISTS (SELECT FROM finished)`

// genericPlanning, evaluated in a transaction that writes a batch of
// listed device records (a claim, outcomes), makes its later statements
// plan without looking at their values.
//
// With the values, the planner reads the statistics of device_jobs,
// which are those of the last snapshot: every record of the job pending,
// none running. For a batch of 1,000 ids it then expected tens of
// thousands of matching records and read every record of the job through
// a bitmap scan, filtering them against the list: 20 ms a batch in a
// 100,000-device job against 2 ms, quadratic in the job's size. A
// generic plan takes the list as a few values and looks each up in the
// primary key, which is right for any batch.
const genericPlanning = `set_config('plan_cache_mode', 'force_generic_plan', true)`

// outcomePlanningSQL makes the rest of a transaction that records
// outcomes plan generically (genericPlanning) and join the outcomes to
// their records by hash. With the statistics of the snapshot the planner
// takes the records running to be nearly none and joins them by a nested
// loop that scans all the outcomes for each record, quadratic in the
// batch; a hash join of the outcomes with the records found through the
// primary key is linear in it.
const outcomePlanningSQL = `SELECT ` + genericPlanning + `, set_config('enable_nestloop', 'off', true)`

// requireRunning returns job.ErrNotRunning unless the job is running.
func requireRunning(ctx context.Context, tx pgx.Tx, id string) error {
	var status string
	err := tx.QueryRow(ctx, `SELECT status FROM jobs WHERE job_id = $1`, id).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && status != string(herd.JobRunning) {
		return job.ErrNotRunning
	}
	return err
}

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

// transition is a change of device record status.
type transition struct {
	from string
	to   herd.DeviceJobStatus
}

// outcomeRows are the outcomes of one transition, as parallel arrays for
// unnest.
type outcomeRows struct {
	ids                            []string
	outcomes, codes, desc, retryAt []*string
}

// FinishDevices records outcomes in one transaction: one statement per
// transition, its rows joined from arrays and the job's counts moved with
// them. Without retries it is one round trip (a batch); outcomes that may
// retry first read the job's status.
func (db *DB) FinishDevices(ctx context.Context, id string, outcomes []job.Outcome, now time.Time) error {
	var err error
	if job.HasRetry(outcomes) {
		err = db.tx(ctx, func(tx pgx.Tx) error {
			if err := db.fenceTx(ctx, tx, id); err != nil {
				return err
			}
			// A job that is ending (cancelled, aborted) retries nothing;
			// the row lock holds off a cancel until this commits.
			var status string
			if err := tx.QueryRow(ctx, `SELECT status FROM jobs WHERE job_id = $1 FOR UPDATE`, id).Scan(&status); err != nil {
				return err
			}
			b := &pgx.Batch{}
			if err := outcomeBatch(b, id, outcomes, status == string(herd.JobRunning) || status == string(herd.JobPaused), now); err != nil {
				return err
			}
			return readBatch(tx.SendBatch(ctx, b), nil)
		})
	} else {
		b := &pgx.Batch{}
		db.fenceBatch(b, id)
		if err = outcomeBatch(b, id, outcomes, false, now); err == nil {
			err = db.batch(ctx, b, nil)
		}
	}
	if err != nil {
		return fmt.Errorf("record outcomes of job %q: %w", id, err)
	}
	return nil
}

// outcomeBatch queues on b the statements that record outcomes of job id
// at now (retrying those with a retry time if retry) and end the job if
// they were its last.
func outcomeBatch(b *pgx.Batch, id string, outcomes []job.Outcome, retry bool, now time.Time) error {
	groups := map[transition]*outcomeRows{}
	for _, o := range outcomes {
		k := transition{"running", o.Status}
		if o.FromPending {
			k.from = "pending"
		}
		var outcome, code, desc, retryAt *string
		if !o.RetryAt.IsZero() && retry {
			k.to = herd.DeviceJobPending
			at := stamp(o.RetryAt)
			retryAt = &at
		}
		g := groups[k]
		if g == nil {
			g = &outcomeRows{}
			groups[k] = g
		}
		if o.Response != nil {
			s, err := outcomeJSON(o.Response)
			if err != nil {
				return fmt.Errorf("encode outcome of %q: %w", o.DeviceID, err)
			}
			outcome = &s
		}
		if o.Error != nil {
			code, desc = &o.Error.Code, &o.Error.Description
		}
		g.ids, g.outcomes, g.codes, g.desc = append(g.ids, o.DeviceID), append(g.outcomes, outcome), append(g.codes, code), append(g.desc, desc)
		g.retryAt = append(g.retryAt, retryAt)
	}
	at := stamp(now)
	b.Queue(outcomePlanningSQL)
	for k, g := range groups {
		q := finishSQL
		if k.from != "pending" || k.to != herd.DeviceJobPending { // else a retry of a device that stays pending
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
			q = fmt.Sprintf(finishCountedSQL, from, to)
		}
		b.Queue(q, string(k.to), at, g.ids, g.outcomes, g.codes, g.desc, id, k.from, g.retryAt)
	}
	b.Queue(finishIfDoneSQL, at, id)
	return nil
}

// ExpireJob ends a job at its deadline.
func (db *DB) ExpireJob(ctx context.Context, id string, end herd.JobStatus, reason string, devErr herd.DeviceJobError, now time.Time) error {
	if end != herd.JobCompleted {
		end = herd.JobFailed
	} else {
		reason = ""
	}
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if err := db.fenceTx(ctx, tx, id); err != nil {
			return err
		}
		at := stamp(now)
		tag, err := tx.Exec(ctx, `UPDATE device_jobs SET status = 'failed', end_time = $1, last_updated_time = $1,
			error_code = $2, error_description = $3 WHERE job_id = $4 AND status IN ('pending', 'running')`,
			at, devErr.Code, devErr.Description, id)
		if err != nil {
			return err
		}
		n := tag.RowsAffected()
		_, err = tx.Exec(ctx, `UPDATE jobs SET
			failed_count = failed_count + $1, pending_count = 0, running_count = 0, end_time = $2,
			failure_reason = CASE WHEN status IN ('running', 'paused') THEN nullif($3, '') ELSE failure_reason END,
			status_message = succeeded_count || ' of ' || device_count || ' devices succeeded, ' || (failed_count + $1) || ' failed',
			status = CASE WHEN status IN ('running', 'paused') THEN $5 ELSE status END
			WHERE job_id = $4 AND end_time IS NULL`, n, at, reason, id, string(end))
		return err
	})
	if err != nil {
		return fmt.Errorf("expire job %q: %w", id, err)
	}
	return nil
}

// AddDevices targets the devices that started matching a continuous job.
func (db *DB) AddDevices(ctx context.Context, id string, where *query.Query, deviceIDs []string, now time.Time) (int64, error) {
	cond, p, err := condition(where)
	if err != nil {
		return 0, err
	}
	var added int64
	err = db.tx(ctx, func(tx pgx.Tx) error {
		// The job's row locked until commit, as a claim locks it: a
		// cancel or the deadline either sees these devices or comes
		// after.
		if err := db.fenceTx(ctx, tx, id); err != nil {
			return err
		}
		var typ string
		err := tx.QueryRow(ctx, `SELECT type FROM jobs WHERE job_id = $1 AND continuous
			AND status IN ('running', 'paused') AND end_time IS NULL FOR UPDATE`, id).Scan(&typ)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // not (or no longer) taking devices
		}
		if err != nil {
			return err
		}
		zero, at := herd.Time{}.String(), stamp(now)
		q := *p
		text := cond.Text
		if deviceIDs != nil {
			text = `device_id = ANY(` + q.add(deviceIDs) + `) AND (` + text + `)`
		}
		tag, err := tx.Exec(ctx, `INSERT INTO device_jobs (job_id, device_id, job_type, status,
			start_time, end_time, created_time, last_updated_time)
			SELECT `+q.add(id)+`, device_id, `+q.add(typ)+`, 'pending', `+q.add(zero)+`, `+q.add(zero)+`, `+
			q.add(at)+`, `+q.add(at)+` FROM devices WHERE `+text+`
			ON CONFLICT (job_id, device_id) DO NOTHING`, q.args...)
		if err != nil {
			return err
		}
		if added = tag.RowsAffected(); added == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE jobs SET device_count = device_count + $1, pending_count = pending_count + $1
			WHERE job_id = $2`, added, id)
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
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if err := db.fenceTx(ctx, tx, id); err != nil {
			return err
		}
		at := stamp(now)
		tag, err := tx.Exec(ctx, `UPDATE device_jobs SET status = 'failed', end_time = $1, last_updated_time = $1,
			error_code = $2, error_description = $3 WHERE job_id = $4 AND status = 'running'`,
			at, devErr.Code, devErr.Description, id)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		if _, err := tx.Exec(ctx, `UPDATE jobs SET running_count = running_count - $1, failed_count = failed_count + $1
			WHERE job_id = $2`, n, id); err != nil {
			return err
		}
		return finishIfDone(ctx, tx, id, now)
	})
	if err != nil {
		return 0, fmt.Errorf("interrupt running devices of job %q: %w", id, err)
	}
	return int(n), nil
}

// purgeChunk is how many device records one purge statement deletes.
const purgeChunk = 20000

// PurgeJobs deletes jobs that ended before the given time.
func (db *DB) PurgeJobs(ctx context.Context, endedBefore time.Time) (int, error) {
	rows, err := db.pool.Query(ctx, `SELECT job_id FROM jobs WHERE end_time IS NOT NULL AND end_time < $1`, stamp(endedBefore))
	if err != nil {
		return 0, fmt.Errorf("find old jobs: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("find old jobs: %w", err)
	}
	for _, id := range ids {
		for {
			tag, err := db.pool.Exec(ctx, `DELETE FROM device_jobs WHERE job_id = $1 AND device_id IN
				(SELECT device_id FROM device_jobs WHERE job_id = $1 LIMIT $2)`, id, purgeChunk)
			if err != nil {
				return 0, fmt.Errorf("purge job %q: %w", id, err)
			}
			if tag.RowsAffected() < purgeChunk {
				break
			}
		}
		if _, err := db.pool.Exec(ctx, `DELETE FROM jobs WHERE job_id = $1`, id); err != nil {
			return 0, fmt.Errorf("purge job %q: %w", id, err)
		}
	}
	return len(ids), nil
}

// deviceJobColumns are the device_jobs columns of a herd.DeviceJob.
const deviceJobColumns = `job_id, device_id, job_type, status, start_time, end_time, created_time,
	last_updated_time, outcome, error_code, error_description, attempts`

// scanDeviceJob reads deviceJobColumns.
func scanDeviceJob(row pgx.Row) (*herd.DeviceJob, error) {
	var (
		j                            herd.DeviceJob
		typ, status                  string
		start, end, created, updated string
		outcome, code, desc          *string
	)
	if err := row.Scan(&j.JobID, &j.DeviceID, &typ, &status, &start, &end, &created, &updated, &outcome, &code, &desc, &j.Attempts); err != nil {
		return nil, err
	}
	j.JobType, j.Status = herd.JobType(typ), herd.DeviceJobStatus(status)
	j.StartTimeUTC, j.EndTimeUTC = parseTime(start), parseTime(end)
	j.CreatedDateTimeUTC, j.LastUpdatedDateTimeUTC = parseTime(created), parseTime(updated)
	if outcome != nil {
		j.Outcome = &herd.DeviceJobOutcome{}
		if err := json.Unmarshal([]byte(*outcome), j.Outcome); err != nil {
			return nil, fmt.Errorf("decode outcome of %s/%s: %w", j.JobID, j.DeviceID, err)
		}
	}
	if code != nil {
		j.Error = &herd.DeviceJobError{Code: *code}
		if desc != nil {
			j.Error.Description = *desc
		}
	}
	return &j, nil
}

// EndedDevices returns the records one write ended, after cursor.
func (db *DB) EndedDevices(ctx context.Context, id string, sel job.EndedSelection, cursor string, limit int) ([]herd.DeviceJob, error) {
	q := &placeholders{}
	text := `SELECT ` + deviceJobColumns + ` FROM device_jobs WHERE job_id = ` + q.add(id) + ` AND device_id > ` + q.add(max(cursor, sel.After)) +
		` AND end_time = ` + q.add(stamp(sel.At)) + ` AND status IN ('completed', 'failed', 'canceled')`
	if sel.Last != "" {
		text += ` AND device_id <= ` + q.add(sel.Last)
	}
	if sel.IDs != nil {
		text += ` AND device_id = ANY(` + q.add(sel.IDs) + `)`
	}
	rows, err := db.pool.Query(ctx, text+` ORDER BY device_id LIMIT `+q.add(limit), q.args...)
	if err != nil {
		return nil, fmt.Errorf("ended device records of job %q: %w", id, err)
	}
	return collectDeviceJobs(rows)
}

// DeviceJobs returns a job's device records in device order (for tests and
// tools; clients read them with SELECT * FROM devices.jobs).
func (db *DB) DeviceJobs(ctx context.Context, id string) ([]herd.DeviceJob, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+deviceJobColumns+` FROM device_jobs WHERE job_id = $1 ORDER BY device_id`, id)
	if err != nil {
		return nil, fmt.Errorf("device records of job %q: %w", id, err)
	}
	return collectDeviceJobs(rows)
}

// collectDeviceJobs reads deviceJobColumns rows and closes them.
func collectDeviceJobs(rows pgx.Rows) ([]herd.DeviceJob, error) {
	defer rows.Close()
	var out []herd.DeviceJob
	for rows.Next() {
		j, err := scanDeviceJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *j)
	}
	return out, rows.Err()
}
