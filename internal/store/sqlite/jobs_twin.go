package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/twin"
)

// A twin-update job patches its devices in batches. Each batch is one
// transaction that patches the twins, bumps their versions and $metadata,
// completes the device records and updates the job's statistics, so a
// crash never applies a patch twice and never loses one.
//
// Most twins are patched by one set-based UPDATE that merges the patch with
// SQLite's json_patch (RFC 7396, the twin merge rule) following a
// twin.MergePlan. That statement cannot check Azure's section size limits
// exactly, so it only takes twins whose merged sections are certainly
// within them (text four times smaller than the limit: a section's size by
// Azure's count is at most four times its JSON text); the rest go through
// twin.Doc.Apply one by one, in the same transaction.

// sizeGuard is the longest section (old section plus patch text) the
// set-based path takes for a section limited to limit bytes. A section's
// size by Azure's count is at most four times the length of its JSON text
// or of its JSONB encoding (a number counts 8 and takes at least 2 bytes;
// a boolean counts 4 and takes at least 1); the margin covers JSONB
// headers that grow as the merge lengthens their payloads.
func sizeGuard(limit int) int { return limit/4 - 32 }

// ApplyTwinBatch patches up to limit pending devices after the cursor.
func (db *DB) ApplyTwinBatch(ctx context.Context, id string, p twin.Patch, after string, limit int, now time.Time) (job.TwinBatchResult, error) {
	var res job.TwinBatchResult
	plan, err := p.Plan(now)
	if err != nil {
		return res, err
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		res = job.TwinBatchResult{}
		if err := requireRunning(ctx, tx, id); err != nil {
			return err
		}
		var last sql.NullString
		var count int
		if err := tx.QueryRowContext(ctx, `SELECT max(device_id), count(*) FROM (SELECT device_id FROM device_jobs
			WHERE job_id = ? AND device_id > ? AND status = 'pending' ORDER BY device_id LIMIT ?)`, id, after, limit).
			Scan(&last, &count); err != nil {
			return err
		}
		if count == 0 {
			res.Next, res.Done = after, true
			return finishIfDone(ctx, tx, id, now)
		}
		res.Next, res.Done = last.String, count < limit
		updated, err := patchSetBased(ctx, tx, plan, id, after, last.String)
		if err != nil {
			return err
		}
		res.Updated = updated
		at := stamp(now)
		if len(updated) == count {
			_, err = tx.ExecContext(ctx, `UPDATE device_jobs SET status = 'completed', start_time = ?, end_time = ?, attempts = 1,
				last_updated_time = ? WHERE job_id = ? AND device_id > ? AND device_id <= ? AND status = 'pending'`,
				at, at, at, id, after, last.String)
			if err != nil {
				return err
			}
		} else {
			ids := make([]string, len(updated))
			for i, u := range updated {
				ids[i] = u.DeviceID
			}
			if err := completeDevices(ctx, tx, id, ids, at); err != nil {
				return err
			}
			slow, failed, err := db.patchOneByOne(ctx, tx, p, id, after, last.String, now)
			if err != nil {
				return err
			}
			res.Updated, res.Failed = append(res.Updated, slow...), failed
		}
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET pending_count = pending_count - ?,
			succeeded_count = succeeded_count + ?, failed_count = failed_count + ? WHERE job_id = ?`,
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
func patchSetBased(ctx context.Context, tx *sql.Tx, plan *twin.MergePlan, id, after, last string) ([]job.Updated, error) {
	set := []string{"twin_version = twin_version + 1", "twin_etag = twin_etag + 1"}
	var setArgs []any
	var guards []string
	var guardArgs []any
	switch {
	case plan.ClearTags:
		set = append(set, "tags = jsonb('{}')")
	case plan.Tags != nil:
		set, setArgs = append(set, "tags = jsonb_patch(tags, ?)"), append(setArgs, string(plan.Tags))
		guards, guardArgs = append(guards, "length(tags) + ? <= ?"), append(guardArgs, plan.TagsPatchSize, sizeGuard(twin.MaxTagsSize))
	}
	if plan.SetsDesired() {
		version := `replace(?, '` + twin.VersionMarker + `', '"$lastUpdatedVersion":' || (desired_version + 1))`
		switch {
		case plan.ClearDesired:
			set = append(set, "desired = jsonb('{}')", "desired_metadata = jsonb("+version+")")
			setArgs = append(setArgs, string(plan.DesiredMeta))
		default:
			set, setArgs = append(set, "desired = jsonb_patch(desired, ?)"), append(setArgs, string(plan.Desired))
			// $metadata is JSONB (migration 0030): both merges work on
			// the stored tree without converting it to text and back.
			meta := "desired_metadata"
			if plan.MetaClear != nil {
				meta, setArgs = "jsonb_patch(desired_metadata, ?)", append(setArgs, string(plan.MetaClear))
			}
			set, setArgs = append(set, "desired_metadata = jsonb_patch("+meta+", "+version+")"), append(setArgs, string(plan.DesiredMeta))
			guards, guardArgs = append(guards, "length(desired) + ? <= ?"), append(guardArgs, plan.DesiredPatchSize, sizeGuard(twin.MaxDesiredSize))
		}
		set = append(set, "desired_version = desired_version + 1")
	}
	// The statement walks the devices of the range in key order and tests
	// each against the job's pending records ("+device_id" keeps SQLite
	// from driving the loop by the IN list, which would seek every twin
	// from the root of the tree); devices in the range that the job does
	// not target are read and skipped.
	where := `device_id > ? AND device_id <= ? AND +device_id IN (SELECT device_id FROM device_jobs
		WHERE job_id = ? AND device_id > ? AND device_id <= ? AND status = 'pending')`
	for _, g := range guards {
		where += " AND " + g
	}
	whereArgs := append([]any{after, last, id, after, last}, guardArgs...)
	var cleared map[string][]string
	if plan.ClearDesired {
		var err error
		if cleared, err = desiredKeys(ctx, tx, where, whereArgs); err != nil {
			return nil, err
		}
	}
	rows, err := tx.QueryContext(ctx, `UPDATE devices SET `+strings.Join(set, ", ")+` WHERE `+where+`
		RETURNING device_id, desired_version, CASE WHEN connection_state = 'Connected' THEN conn_node END`, append(setArgs, whereArgs...)...)
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

// desiredKeys returns the top-level desired properties of the devices
// that where selects, before a patch clears them (what the devices are
// told to remove). Only jobs whose patch is "desired": null ask.
func desiredKeys(ctx context.Context, tx *sql.Tx, where string, args []any) (map[string][]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT device_id, key FROM devices, json_each(devices.desired) WHERE `+where, args...)
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

// completeDevices completes the records of the given devices.
func completeDevices(ctx context.Context, tx *sql.Tx, id string, ids []string, at string) error {
	if len(ids) == 0 {
		return nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE device_jobs SET status = 'completed', start_time = ?, end_time = ?, attempts = 1,
		last_updated_time = ? WHERE job_id = ? AND status = 'pending' AND device_id IN (SELECT value FROM json_each(?))`,
		at, at, at, id, string(list))
	return err
}

// patchOneByOne patches the pending devices of the range that the
// set-based statement left: large twins (checked exactly by Doc.Apply) and
// devices deleted since the snapshot.
func (db *DB) patchOneByOne(ctx context.Context, tx *sql.Tx, p twin.Patch, id, after, last string, now time.Time) ([]job.Updated, int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT device_id FROM device_jobs WHERE job_id = ? AND device_id > ? AND device_id <= ?
		AND status = 'pending' ORDER BY device_id`, id, after, last)
	if err != nil {
		return nil, 0, err
	}
	var ids []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return nil, 0, err
		}
		ids = append(ids, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	at := stamp(now)
	var updated []job.Updated
	failed := 0
	for _, dev := range ids {
		var raw rawDoc
		err := tx.QueryRowContext(ctx, `SELECT `+twinSelect+` FROM devices WHERE device_id = ?`, dev).Scan(raw.dest()...)
		var devErr *herd.DeviceJobError
		switch {
		case errors.Is(err, sql.ErrNoRows):
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
			if err := db.writeDoc(ctx, tx, dev, doc); err != nil {
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
			if _, err := tx.ExecContext(ctx, `UPDATE device_jobs SET status = 'failed', start_time = ?, end_time = ?, attempts = 1,
				last_updated_time = ?, error_code = ?, error_description = ? WHERE job_id = ? AND device_id = ?`,
				at, at, at, devErr.Code, devErr.Description, id, dev); err != nil {
				return nil, 0, err
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE device_jobs SET status = 'completed', start_time = ?, end_time = ?, attempts = 1,
			last_updated_time = ? WHERE job_id = ? AND device_id = ?`, at, at, at, id, dev); err != nil {
			return nil, 0, err
		}
	}
	return updated, failed, nil
}
