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
	// A device's changes go in two statements whatever their number: the
	// sets as [[id, subscriptions], …] and the deletes as [id, …]. A
	// module's are rare, one statement each.
	var sets [][2]any
	var dels []string
	var mods []bus.SessionChange
	for _, c := range changes {
		switch _, mod := herd.SplitIdentity(c.DeviceID); {
		case mod != "":
			mods = append(mods, c)
		case c.Delete:
			dels = append(dels, c.DeviceID)
		default:
			sets = append(sets, [2]any{c.DeviceID, int64(c.Subscriptions)})
		}
	}
	setList, err := json.Marshal(sets)
	if err != nil {
		return err
	}
	delList, err := json.Marshal(dels)
	if err != nil {
		return err
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		if len(sets) > 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_sessions (device_id, subscriptions)
				SELECT d.device_id, c.value ->> 1 FROM json_each(?) c JOIN devices d ON d.device_id = c.value ->> 0 WHERE true
				ON CONFLICT (device_id) DO UPDATE SET subscriptions = excluded.subscriptions`, string(setList)); err != nil {
				return fmt.Errorf("save %d sessions: %w", len(sets), err)
			}
		}
		if len(dels) > 0 {
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_sessions WHERE device_id IN (SELECT value FROM json_each(?))`, string(delList)); err != nil {
				return fmt.Errorf("delete %d sessions: %w", len(dels), err)
			}
		}
		for _, c := range mods {
			dev, mod := herd.SplitIdentity(c.DeviceID)
			var err error
			if c.Delete {
				_, err = tx.ExecContext(ctx, `DELETE FROM module_sessions WHERE device_id = ? AND module_id = ?`, dev, mod)
			} else {
				_, err = tx.ExecContext(ctx, `INSERT INTO module_sessions (device_id, module_id, subscriptions)
					SELECT device_id, module_id, ? FROM modules WHERE device_id = ? AND module_id = ?
					ON CONFLICT (device_id, module_id) DO UPDATE SET subscriptions = excluded.subscriptions`, int64(c.Subscriptions), dev, mod)
			}
			if err != nil {
				return fmt.Errorf("save session of %q: %w", c.DeviceID, err)
			}
		}
		return nil
	})
}
