package postgres

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/twin"
)

// A twin-update job patches its devices in batches, as the SQLite store
// does: each batch is one transaction that merges the patch into the
// twins with one set-based UPDATE (herd_merge, or jsonb || for a patch of
// plain values), bumps versions and $metadata, completes the device
// records and updates the job's statistics, so a crash never applies a
// patch twice and never loses one. Twins that may grow past a size limit
// go one by one through twin.Doc.Apply, which checks exactly.

// sizeGuard is the longest section text (old section plus patch text) the
// set-based path takes for a section limited to limit bytes: a section's
// size by Azure's count is at most four times its JSON text's length.
func sizeGuard(limit int) int { return limit/4 - 32 }

// flat reports whether a patch sets plain values only (no objects to merge
// into, no nulls to delete): then jsonb's || merges it exactly.
func flat(m map[string]any) bool {
	for _, v := range m {
		switch v.(type) {
		case nil, map[string]any:
			return false
		}
	}
	return true
}

// ApplyTwinBatch patches up to limit pending devices after the cursor.
func (db *DB) ApplyTwinBatch(ctx context.Context, id string, p twin.Patch, after string, limit int, now time.Time) (job.TwinBatchResult, error) {
	var res job.TwinBatchResult
	plan, err := p.Plan(now)
	if err != nil {
		return res, err
	}
	err = db.tx(ctx, func(tx pgx.Tx) error {
		res = job.TwinBatchResult{}
		// Not locked: several batches of a job commit at once. A pause
		// that commits meanwhile lets this batch finish, as a call in
		// flight does.
		if err := requireRunning(ctx, tx, id); err != nil {
			return err
		}
		var last *string
		var count int
		if err := tx.QueryRow(ctx, `SELECT max(device_id), count(*) FROM (SELECT device_id FROM device_jobs
			WHERE job_id = $1 AND device_id > $2 AND status = 'pending' ORDER BY job_id, device_id LIMIT $3) s`, id, after, limit).
			Scan(&last, &count); err != nil {
			return err
		}
		if count == 0 {
			res.Next, res.Done = after, true
			if err := db.fenceTx(ctx, tx, id); err != nil {
				return err
			}
			return finishIfDone(ctx, tx, id, now)
		}
		res.Next, res.Done = *last, count < limit
		// The range's pending records are locked before the twins are
		// read: a second runner of the same batch (a node that lost the
		// job's lease and has not noticed yet) waits here for the first to
		// commit, and the statements after this one, reading afresh, see
		// its records no longer pending. Without it, both could take
		// their snapshot of pending records first, and the second, woken
		// by the twin rows' locks, would patch the twins again.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM device_jobs WHERE job_id = $1 AND device_id > $2 AND device_id <= $3
			AND status = 'pending' FOR UPDATE`, id, after, *last); err != nil {
			return err
		}
		updated, err := patchSetBased(ctx, tx, p, plan, id, after, *last)
		if err != nil {
			return err
		}
		res.Updated = updated
		at := stamp(now)
		if len(updated) == count {
			if _, err := tx.Exec(ctx, `UPDATE device_jobs SET status = 'completed', start_time = $1, end_time = $1, attempts = 1,
				last_updated_time = $1 WHERE job_id = $2 AND device_id > $3 AND device_id <= $4 AND status = 'pending'`,
				at, id, after, *last); err != nil {
				return err
			}
		} else {
			ids := make([]string, len(updated))
			for i, u := range updated {
				ids[i] = u.DeviceID
			}
			if _, err := tx.Exec(ctx, `UPDATE device_jobs SET status = 'completed', start_time = $1, end_time = $1, attempts = 1,
				last_updated_time = $1 WHERE job_id = $2 AND status = 'pending' AND device_id = ANY($3)`, at, id, ids); err != nil {
				return err
			}
			slow, failed, err := patchOneByOne(ctx, tx, p, id, after, *last, now)
			if err != nil {
				return err
			}
			res.Updated, res.Failed = append(res.Updated, slow...), failed
		}
		// Checked last, not first: the check locks the job's row until
		// commit, and the batches of a job run at once. The twins and
		// records this transaction changed are undone if it fails.
		if err := db.fenceTx(ctx, tx, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE jobs SET pending_count = pending_count - $1,
			succeeded_count = succeeded_count + $2, failed_count = failed_count + $3 WHERE job_id = $4`,
			len(res.Updated)+res.Failed, len(res.Updated), res.Failed, id); err != nil {
			return err
		}
		return finishIfDone(ctx, tx, id, now)
	})
	if err != nil {
		return job.TwinBatchResult{}, fmt.Errorf("twin batch of job %q: %w", id, err)
	}
	return res, nil
}

// patchSetBased patches, in one statement, the pending devices of the
// range (after, last] whose sections stay certainly within their limits.
func patchSetBased(ctx context.Context, tx pgx.Tx, p twin.Patch, plan *twin.MergePlan, id, after, last string) ([]job.Updated, error) {
	var ph placeholders
	set := []string{"twin_version = d.twin_version + 1", "twin_etag = d.twin_etag + 1"}
	var guards []string
	switch {
	case plan.ClearTags:
		set = append(set, "tags = '{}'::jsonb")
	case plan.Tags != nil:
		patch := ph.add(string(plan.Tags)) + "::text::jsonb"
		if flat(p.Tags.Value) {
			set = append(set, "tags = d.tags || "+patch)
		} else {
			set = append(set, "tags = herd_merge(d.tags, "+patch+")")
		}
		guards = append(guards, "octet_length(d.tags::text) + "+ph.add(plan.TagsPatchSize)+" <= "+ph.add(sizeGuard(twin.MaxTagsSize)))
	}
	if plan.SetsDesired() {
		version := `replace(` + ph.add(string(plan.DesiredMeta)) + `::text, '` + twin.VersionMarker + `', '"$lastUpdatedVersion":' || (d.desired_version + 1))::jsonb`
		switch {
		case plan.ClearDesired:
			set = append(set, "desired = '{}'::jsonb", "desired_metadata = "+version)
		case flat(p.Desired.Value):
			// Each property's $metadata node is replaced whole, as a
			// clear and a merge would leave it.
			set = append(set, "desired = d.desired || "+ph.add(string(plan.Desired))+"::text::jsonb",
				"desired_metadata = d.desired_metadata || "+version)
			guards = append(guards, "octet_length(d.desired::text) + "+ph.add(plan.DesiredPatchSize)+" <= "+ph.add(sizeGuard(twin.MaxDesiredSize)))
		default:
			set = append(set, "desired = herd_merge(d.desired, "+ph.add(string(plan.Desired))+"::text::jsonb)")
			meta := "d.desired_metadata"
			if plan.MetaClear != nil {
				meta = "herd_merge(d.desired_metadata, " + ph.add(string(plan.MetaClear)) + "::text::jsonb)"
			}
			set = append(set, "desired_metadata = herd_merge("+meta+", "+version+")")
			guards = append(guards, "octet_length(d.desired::text) + "+ph.add(plan.DesiredPatchSize)+" <= "+ph.add(sizeGuard(twin.MaxDesiredSize)))
		}
		set = append(set, "desired_version = d.desired_version + 1")
	}
	where := `d.device_id = j.device_id`
	for _, g := range guards {
		where += " AND " + g
	}
	from := `(SELECT device_id FROM device_jobs WHERE job_id = ` + ph.add(id) + ` AND device_id > ` + ph.add(after) +
		` AND device_id <= ` + ph.add(last) + ` AND status = 'pending') j`
	var cleared map[string][]string
	if plan.ClearDesired {
		var err error
		if cleared, err = desiredKeys(ctx, tx, plan, id, after, last); err != nil {
			return nil, err
		}
	}
	// It returns the node holding each device's connection (NULL: not
	// connected), for the notifications. A claim of a row in progress
	// (ClaimConnections) holds its lock, so the UPDATE waits for it and
	// returns what it wrote: a device claimed before this commits is seen.
	rows, err := tx.Query(ctx, `UPDATE devices d SET `+strings.Join(set, ", ")+` FROM `+from+` WHERE `+where+`
		RETURNING d.device_id, d.desired_version, CASE WHEN d.connection_state = 'Connected' THEN d.conn_node END`, ph.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []job.Updated
	for rows.Next() {
		var u job.Updated
		var node *string
		if err := rows.Scan(&u.DeviceID, &u.DesiredVersion, &node); err != nil {
			return nil, err
		}
		u.Where = twin.WhereNode(node)
		if !plan.SetsDesired() {
			u.DesiredVersion = 0
		}
		u.Cleared = cleared[u.DeviceID]
		out = append(out, u)
	}
	return out, rows.Err()
}

// desiredKeys returns the top-level desired properties of the devices the
// batch selects, before a patch clears them (what the devices are told to
// remove). Only jobs whose patch is "desired": null ask.
func desiredKeys(ctx context.Context, tx pgx.Tx, plan *twin.MergePlan, id, after, last string) (map[string][]string, error) {
	guard := "TRUE"
	args := []any{id, after, last}
	if plan.Tags != nil {
		guard = "octet_length(d.tags::text) + $4 <= $5" // as patchSetBased's
		args = append(args, plan.TagsPatchSize, sizeGuard(twin.MaxTagsSize))
	}
	rows, err := tx.Query(ctx, `SELECT d.device_id, k FROM devices d CROSS JOIN LATERAL jsonb_object_keys(d.desired) k
		WHERE d.device_id IN (SELECT device_id FROM device_jobs WHERE job_id = $1 AND device_id > $2 AND device_id <= $3
		AND status = 'pending') AND `+guard, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var dev, key string
		if err := rows.Scan(&dev, &key); err != nil {
			return nil, err
		}
		out[dev] = append(out[dev], key)
	}
	return out, rows.Err()
}

// patchOneByOne patches the pending devices of the range that the
// set-based statement left: large twins (checked exactly by Doc.Apply) and
// devices deleted since the snapshot.
func patchOneByOne(ctx context.Context, tx pgx.Tx, p twin.Patch, id, after, last string, now time.Time) ([]job.Updated, int, error) {
	rows, err := tx.Query(ctx, `SELECT device_id FROM device_jobs WHERE job_id = $1 AND device_id > $2 AND device_id <= $3
		AND status = 'pending' ORDER BY device_id`, id, after, last)
	if err != nil {
		return nil, 0, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, 0, err
	}
	at := stamp(now)
	var updated []job.Updated
	failed := 0
	for _, dev := range ids {
		var raw rawDoc
		err := tx.QueryRow(ctx, `SELECT `+twinColumns+` FROM devices WHERE device_id = $1 FOR UPDATE`, dev).Scan(raw.dest()...)
		var devErr *herd.DeviceJobError
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			devErr = &herd.DeviceJobError{Code: string(herd.ErrDeviceNotFound),
				Description: fmt.Sprintf("device %q was deleted after the job started", dev)}
		case err != nil:
			return nil, 0, err
		default:
			doc, err := raw.decode()
			if err != nil {
				return nil, 0, err
			}
			old := doc.Desired
			up, err := doc.Apply(p, false, now)
			if err != nil {
				if herd.ErrorCodeOf(err) == herd.ErrInternal {
					return nil, 0, err
				}
				devErr = &herd.DeviceJobError{Code: string(herd.ErrorCodeOf(err)), Description: herd.ErrorMessage(err)}
				break
			}
			if err := writeDoc(ctx, tx, dev, doc); err != nil {
				return nil, 0, err
			}
			u := job.Updated{DeviceID: dev, DesiredVersion: up.DesiredVersion}
			if p.Desired.Set && p.Desired.Value == nil {
				u.Cleared = slices.Collect(maps.Keys(old))
			}
			updated = append(updated, u)
		}
		if devErr != nil {
			failed++
			if _, err := tx.Exec(ctx, `UPDATE device_jobs SET status = 'failed', start_time = $1, end_time = $1, attempts = 1,
				last_updated_time = $1, error_code = $2, error_description = $3 WHERE job_id = $4 AND device_id = $5`,
				at, devErr.Code, devErr.Description, id, dev); err != nil {
				return nil, 0, err
			}
			continue
		}
		if _, err := tx.Exec(ctx, `UPDATE device_jobs SET status = 'completed', start_time = $1, end_time = $1, attempts = 1,
			last_updated_time = $1 WHERE job_id = $2 AND device_id = $3`, at, id, dev); err != nil {
			return nil, 0, err
		}
	}
	return updated, failed, nil
}

// TwinBatching (job.TwinBatching): batches of 5,000 twins, two in flight
// at once — while one batch waits for its commit to be flushed, the other
// is written. On a 2-core machine two in flight took a million-twin job
// from 26-28 s to 20 s and 5,000 rather than 2,000 twins a batch to
// 15-16 s; a third batch in flight, or 10,000 a batch, was slower
// (docs/benchmarks.md). A small pool (pool_max_conns) keeps at least
// half its connections for everything else.
func (db *DB) TwinBatching() (size, writers int) {
	return 5000, int(max(1, min(2, db.pool.Config().MaxConns/2)))
}

var _ job.TwinBatching = (*DB)(nil)
