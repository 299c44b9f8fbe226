package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/bus"
)

var _ auth.Store = (*DB)(nil)

// Policies returns the hub's shared access policies.
func (db *DB) Policies(ctx context.Context) ([]auth.Policy, error) {
	rows, err := db.pool.Query(ctx, `SELECT name, primary_key, secondary_key, rights FROM policies ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	defer rows.Close()
	var out []auth.Policy
	for rows.Next() {
		var p auth.Policy
		var rights int32
		if err := rows.Scan(&p.Name, &p.PrimaryKey, &p.SecondaryKey, &rights); err != nil {
			return nil, fmt.Errorf("list policies: %w", err)
		}
		p.Rights = auth.Rights(rights)
		out = append(out, p)
	}
	return out, rows.Err()
}

// CreatePolicies stores new policies; several nodes starting on a new
// database at once create the same set, so a policy that exists is left
// as it is.
func (db *DB) CreatePolicies(ctx context.Context, ps []auth.Policy) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		for _, p := range ps {
			if _, err := tx.Exec(ctx, `INSERT INTO policies (name, primary_key, secondary_key, rights) VALUES ($1, $2, $3, $4)
				ON CONFLICT (name) DO NOTHING`, p.Name, p.PrimaryKey, p.SecondaryKey, int32(p.Rights)); err != nil {
				return fmt.Errorf("create policy %q: %w", p.Name, err)
			}
		}
		return nil
	})
}

// Setting returns a stored setting, or "" if it was never set.
func (db *DB) Setting(ctx context.Context, name string) (string, error) {
	var v string
	err := db.pool.QueryRow(ctx, `SELECT value FROM settings WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read setting %q: %w", name, err)
	}
	return v, nil
}

// SetSetting stores a setting.
func (db *DB) SetSetting(ctx context.Context, name, value string) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, value)
	if err != nil {
		return fmt.Errorf("write setting %q: %w", name, err)
	}
	return nil
}

// Session returns a device's stored MQTT subscription set.
func (db *DB) Session(ctx context.Context, deviceID string) (bus.Feature, bool, error) {
	var subs int32
	var err error
	if dev, mod := herd.SplitIdentity(deviceID); mod != "" {
		err = db.pool.QueryRow(ctx, `SELECT subscriptions FROM module_sessions WHERE device_id = $1 AND module_id = $2`, dev, mod).Scan(&subs)
	} else {
		err = db.pool.QueryRow(ctx, `SELECT subscriptions FROM device_sessions WHERE device_id = $1`, deviceID).Scan(&subs)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read session of %q: %w", deviceID, err)
	}
	return bus.Feature(subs), true, nil
}

// Sessions reads the sessions of many devices (not modules) at once: the
// subscriptions of those that have one, by device id.
func (db *DB) Sessions(ctx context.Context, deviceIDs []string) (map[string]bus.Feature, error) {
	rows, err := db.pool.Query(ctx, `SELECT device_id, subscriptions FROM device_sessions WHERE device_id = ANY($1)`, deviceIDs)
	if err != nil {
		return nil, fmt.Errorf("read %d sessions: %w", len(deviceIDs), err)
	}
	defer rows.Close()
	out := make(map[string]bus.Feature, len(deviceIDs))
	for rows.Next() {
		var id string
		var subs int32
		if err := rows.Scan(&id, &subs); err != nil {
			return nil, fmt.Errorf("read %d sessions: %w", len(deviceIDs), err)
		}
		out[id] = bus.Feature(subs)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %d sessions: %w", len(deviceIDs), err)
	}
	return out, nil
}

// SaveSessions writes a batch of session changes in one transaction;
// sessions of devices that no longer exist are not created. A change with
// an epoch (cluster mode) is written only while the device's (or
// module's) connection epoch is still that one.
func (db *DB) SaveSessions(ctx context.Context, changes []bus.SessionChange) error {
	var upsertIDs, deleteIDs []string
	var subs []int32
	var upsertEpochs, deleteEpochs []int64
	var modules []bus.SessionChange
	for _, c := range changes {
		switch _, mod := herd.SplitIdentity(c.DeviceID); {
		case mod != "":
			modules = append(modules, c) // rare next to devices': one by one
		case c.Delete:
			deleteIDs, deleteEpochs = append(deleteIDs, c.DeviceID), append(deleteEpochs, c.Epoch)
		default:
			upsertIDs, subs = append(upsertIDs, c.DeviceID), append(subs, int32(c.Subscriptions))
			upsertEpochs = append(upsertEpochs, c.Epoch)
		}
	}
	if len(changes) == 0 {
		return nil
	}
	// One round trip, one transaction.
	b := &pgx.Batch{}
	b.Queue(keyedPlanningSQL)
	for _, c := range modules {
		dev, mod := herd.SplitIdentity(c.DeviceID)
		if c.Delete {
			b.Queue(`DELETE FROM module_sessions s USING modules m
				WHERE s.device_id = $1 AND s.module_id = $2 AND m.device_id = s.device_id AND m.module_id = s.module_id
				AND ($3::bigint = 0 OR m.conn_epoch = $3::bigint)`, dev, mod, c.Epoch)
		} else {
			b.Queue(`INSERT INTO module_sessions (device_id, module_id, subscriptions)
				SELECT device_id, module_id, $3 FROM modules WHERE device_id = $1 AND module_id = $2 AND ($4::bigint = 0 OR conn_epoch = $4::bigint)
				ON CONFLICT (device_id, module_id) DO UPDATE SET subscriptions = excluded.subscriptions`, dev, mod, int32(c.Subscriptions), c.Epoch)
		}
	}
	if len(deleteIDs) > 0 {
		b.Queue(deleteSessionsSQL, deleteIDs, deleteEpochs)
	}
	if len(upsertIDs) > 0 {
		b.Queue(saveSessionsSQL, upsertIDs, subs, upsertEpochs)
	}
	err := db.batch(ctx, b, nil)
	if err != nil {
		return fmt.Errorf("save sessions: %w", err)
	}
	return nil
}

// deleteSessionsSQL deletes the sessions of the listed devices ($1), each
// while its connection epoch is the one listed with it ($2; 0: any).
const deleteSessionsSQL = `DELETE FROM device_sessions s USING unnest($1::text[], $2::bigint[]) AS c(id, epoch), devices d
	WHERE s.device_id = c.id AND d.device_id = c.id AND (c.epoch = 0 OR d.conn_epoch = c.epoch)`

// saveSessionsSQL writes the subscriptions ($2) of the listed devices
// ($1) that exist, each while its connection epoch is the one listed
// with it ($3; 0: any). The last change of a device in the batch wins.
const saveSessionsSQL = `INSERT INTO device_sessions (device_id, subscriptions)
	SELECT DISTINCT ON (c.id) c.id, c.subs FROM unnest($1::text[], $2::int[], $3::bigint[]) WITH ORDINALITY AS c(id, subs, epoch, n)
	JOIN devices d ON d.device_id = c.id WHERE c.epoch = 0 OR d.conn_epoch = c.epoch ORDER BY c.id, c.n DESC
	ON CONFLICT (device_id) DO UPDATE SET subscriptions = excluded.subscriptions`
