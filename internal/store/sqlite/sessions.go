package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
)

// Session returns a device's (or a module's) stored MQTT subscription set.
func (db *DB) Session(ctx context.Context, deviceID string) (bus.Feature, bool, error) {
	var subs int64
	var err error
	if dev, mod := herd.SplitIdentity(deviceID); mod != "" {
		err = db.read.QueryRowContext(ctx, `SELECT subscriptions FROM module_sessions WHERE device_id = ? AND module_id = ?`, dev, mod).Scan(&subs)
	} else {
		err = db.stmts.session.QueryRowContext(ctx, deviceID).Scan(&subs)
	}
	if errors.Is(err, sql.ErrNoRows) {
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
	list, err := json.Marshal(deviceIDs)
	if err != nil {
		return nil, err
	}
	rows, err := db.stmts.sessions.QueryContext(ctx, string(list))
	if err != nil {
		return nil, fmt.Errorf("read %d sessions: %w", len(deviceIDs), err)
	}
	defer rows.Close()
	out := make(map[string]bus.Feature, len(deviceIDs))
	for rows.Next() {
		var id string
		var subs int64
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
// sessions of devices (or modules) that no longer exist are not created.
func (db *DB) SaveSessions(ctx context.Context, changes []bus.SessionChange) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		upsert, err := tx.PrepareContext(ctx, `INSERT INTO device_sessions (device_id, subscriptions)
			SELECT device_id, ? FROM devices WHERE device_id = ?
			ON CONFLICT (device_id) DO UPDATE SET subscriptions = excluded.subscriptions`)
		if err != nil {
			return err
		}
		defer upsert.Close()
		del, err := tx.PrepareContext(ctx, `DELETE FROM device_sessions WHERE device_id = ?`)
		if err != nil {
			return err
		}
		defer del.Close()
		for _, c := range changes {
			dev, mod := herd.SplitIdentity(c.DeviceID)
			switch {
			case mod != "" && c.Delete:
				_, err = tx.ExecContext(ctx, `DELETE FROM module_sessions WHERE device_id = ? AND module_id = ?`, dev, mod)
			case mod != "":
				_, err = tx.ExecContext(ctx, `INSERT INTO module_sessions (device_id, module_id, subscriptions)
					SELECT device_id, module_id, ? FROM modules WHERE device_id = ? AND module_id = ?
					ON CONFLICT (device_id, module_id) DO UPDATE SET subscriptions = excluded.subscriptions`, int64(c.Subscriptions), dev, mod)
			case c.Delete:
				_, err = del.ExecContext(ctx, c.DeviceID)
			default:
				_, err = upsert.ExecContext(ctx, int64(c.Subscriptions), c.DeviceID)
			}
			if err != nil {
				return fmt.Errorf("save session of %q: %w", c.DeviceID, err)
			}
		}
		return nil
	})
}
