package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herd-iot/herd/internal/job"
)

// JobLeases returns the job leases of node (job.Leases) on this
// database: the jobs' rows say which node holds each (lease_node,
// lease_until) and at which epoch (lease_epoch, migration 0017).
func (db *DB) JobLeases(node string) job.Leases { return &jobLeases{db: db, node: node} }

type jobLeases struct {
	db   *DB
	node string
}

var _ job.Leases = (*jobLeases)(nil)

// TakeJob takes a job whose lease no node holds at now, this node held
// last (it restarted), or the holder of which has no database session
// left (killed: its node lock is free, see Join), and raises its epoch.
// The CASE keeps the lock probe to the last case; a probe that succeeds
// holds the dead node's lock only until this statement commits.
func (l *jobLeases) TakeJob(ctx context.Context, id string, now, until time.Time) (int64, error) {
	var epoch int64
	err := l.db.pool.QueryRow(ctx, `UPDATE jobs SET lease_node = $2, lease_epoch = lease_epoch + 1, lease_until = $4
		WHERE job_id = $1 AND end_time IS NULL AND CASE
			WHEN lease_until IS NULL OR lease_until <= $3 OR lease_node = $2 THEN true
			ELSE pg_try_advisory_xact_lock($5, hashtext(lease_node)) END
		RETURNING lease_epoch`, id, l.node, stamp(now), stamp(until), nodeLockClass).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("take the lease of job %q: %w", id, err)
	}
	return epoch, nil
}

// RenewJobs extends the leases this node still holds at their epochs.
func (l *jobLeases) RenewJobs(ctx context.Context, held map[string]int64, until time.Time) ([]string, error) {
	ids, epochs := make([]string, 0, len(held)), make([]int64, 0, len(held))
	for id, e := range held {
		ids, epochs = append(ids, id), append(epochs, e)
	}
	rows, err := l.db.pool.Query(ctx, `UPDATE jobs j SET lease_until = $3
		FROM unnest($1::text[], $2::bigint[]) AS h(id, epoch)
		WHERE j.job_id = h.id AND j.lease_epoch = h.epoch AND j.lease_node = $4
		RETURNING j.job_id`, ids, epochs, stamp(until), l.node)
	if err != nil {
		return nil, fmt.Errorf("renew job leases: %w", err)
	}
	kept, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("renew job leases: %w", err)
	}
	still := make(map[string]bool, len(kept))
	for _, id := range kept {
		still[id] = true
	}
	var lost []string
	for _, id := range ids {
		if !still[id] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// ReleaseJob ends a lease still at its epoch; lease_node stays, naming
// the node that ran the job last.
func (l *jobLeases) ReleaseJob(ctx context.Context, id string, epoch int64) error {
	if _, err := l.db.pool.Exec(ctx, `UPDATE jobs SET lease_until = NULL WHERE job_id = $1 AND lease_epoch = $2 AND lease_node = $3`,
		id, epoch, l.node); err != nil {
		return fmt.Errorf("hand back the lease of job %q: %w", id, err)
	}
	return nil
}

// Fenced returns a view of the database whose job writes first check,
// in their transaction, that the job's lease is at epoch (herd_fence,
// which also locks the job's row until commit): a take that commits
// before fails the write; one after waits for it. It shares db's
// connections: close db, not the view.
func (l *jobLeases) Fenced(epoch int64) job.Store {
	if epoch == 0 {
		epoch = -1 // 0 is no fence; no lease is at -1
	}
	return &DB{conns: l.db.conns, fence: epoch}
}

// fenceSQL fails its transaction unless the lease of job $1 is at epoch
// $2 (SQLSTATE HL001).
const fenceSQL = `SELECT herd_fence($1, $2)`

// fenceTx checks db's fence on job id first in tx (nothing if db has
// none).
func (db *DB) fenceTx(ctx context.Context, tx pgx.Tx, id string) error {
	if db.fence == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, fenceSQL, id, db.fence)
	return err
}

// fenceBatch queues db's fence check on job id (nothing if db has none);
// a batch's reader skips its result with skipFence.
func (db *DB) fenceBatch(b *pgx.Batch, id string) {
	if db.fence != 0 {
		b.Queue(fenceSQL, id, db.fence)
	}
}

// skipFence reads the result of fenceBatch's statement, if queued.
func (db *DB) skipFence(br pgx.BatchResults) error {
	if db.fence == 0 {
		return nil
	}
	_, err := br.Exec()
	return err
}

// leaseLost makes herd_fence's refusal job.ErrLeaseLost.
func leaseLost(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "HL001" {
		return fmt.Errorf("%w (%s)", job.ErrLeaseLost, pe.Message)
	}
	return err
}
