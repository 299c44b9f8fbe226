package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// moduleInsert are the modules columns of a herd.Module, in the order
// scanModule reads them (from moduleColumns).
const moduleInsert = `device_id, module_id, generation_id, etag, managed_by, auth_type, primary_key,
	secondary_key, primary_thumbprint, secondary_thumbprint, connection_state,
	connection_state_updated_time, last_activity_time, c2d_message_count`

// moduleColumns selects moduleInsert, the module's activity as
// query.LastActivity has it.
var moduleColumns = strings.Replace(moduleInsert, "last_activity_time", query.LastActivity("modules", true), 1)

func scanModule(row scanner) (*herd.Module, error) { return scanModuleWith(row) }

// scanModuleWith reads moduleColumns and any extra destinations after them.
func scanModuleWith(row scanner, extra ...any) (*herd.Module, error) {
	var (
		m                  herd.Module
		etag               int64
		connTime, lastTime string
	)
	a := &m.Authentication
	if err := row.Scan(append([]any{&m.DeviceID, &m.ModuleID, &m.GenerationID, &etag, &m.ManagedBy, &a.Type,
		&a.SymmetricKey.PrimaryKey, &a.SymmetricKey.SecondaryKey, &a.X509Thumbprint.PrimaryThumbprint,
		&a.X509Thumbprint.SecondaryThumbprint, &m.ConnectionState, &connTime, &lastTime,
		&m.CloudToDeviceMessageCount}, extra...)...); err != nil {
		return nil, err
	}
	m.ETag = registry.ETagString(etag)
	m.ConnectionStateUpdatedTime = parseTime(connTime)
	m.LastActivityTime = parseTime(lastTime)
	return &m, nil
}

func moduleNotFound(deviceID, moduleID string) error {
	return herd.Errorf(herd.ErrModuleNotFound, "device %q has no module %q", deviceID, moduleID)
}

// deviceExists answers DeviceNotFound unless the device exists.
func deviceExists(ctx context.Context, q queryer, id string) error {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE device_id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound(id)
	}
	return err
}

// CreateModule stores a new module of an existing device.
func (db *DB) CreateModule(ctx context.Context, m *herd.Module, doc *twin.Doc) (*herd.Module, error) {
	docArgs, err := encodeDoc(doc)
	if err != nil {
		return nil, err
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		if err := deviceExists(ctx, tx, m.DeviceID); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM modules WHERE device_id = ?`, m.DeviceID).Scan(&n); err != nil {
			return err
		}
		if n >= registry.MaxModulesPerDevice {
			return herd.Errorf(herd.ErrArgumentInvalid, "device %q has %d modules, the most a device may have", m.DeviceID, n)
		}
		a := m.Authentication
		args := append([]any{m.DeviceID, m.ModuleID, m.GenerationID, 1, m.ManagedBy, a.Type,
			a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey, a.X509Thumbprint.PrimaryThumbprint,
			a.X509Thumbprint.SecondaryThumbprint, string(herd.Disconnected), herd.Time{}.String(), herd.Time{}.String(), 0}, docArgs...)
		res, err := tx.ExecContext(ctx, `INSERT INTO modules (`+moduleInsert+`, `+twinColumns+`)
			VALUES (`+placeholders(len(args)-len(docArgs))+`, `+twinValues+`) ON CONFLICT (device_id, module_id) DO NOTHING`, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return herd.Errorf(herd.ErrModuleAlreadyExists, "device %q already has a module %q", m.DeviceID, m.ModuleID)
		}
		return nil
	})
	if err != nil {
		return nil, storeError("create module", err)
	}
	out := *m
	out.ETag = registry.ETagString(1)
	out.ConnectionState = herd.Disconnected
	return &out, nil
}

// storeError keeps a *herd.Error as it is and wraps anything else.
func storeError(op string, err error) error {
	if herd.ErrorCodeOf(err) != herd.ErrInternal {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// currentModule reads a module for update, or answers DeviceNotFound or
// ModuleNotFound.
func currentModule(ctx context.Context, tx *sql.Tx, deviceID, moduleID string) (*herd.Module, error) {
	m, err := scanModule(tx.QueryRowContext(ctx, `SELECT `+moduleColumns+` FROM modules
		WHERE device_id = ? AND module_id = ?`, deviceID, moduleID))
	if errors.Is(err, sql.ErrNoRows) {
		if err := deviceExists(ctx, tx, deviceID); err != nil {
			return nil, err
		}
		return nil, moduleNotFound(deviceID, moduleID)
	}
	return m, err
}

// UpdateModule changes a module in one transaction.
func (db *DB) UpdateModule(ctx context.Context, deviceID, moduleID string, change func(*herd.Module) error) (*herd.Module, error) {
	var out *herd.Module
	err := db.tx(ctx, func(tx *sql.Tx) error {
		cur, err := currentModule(ctx, tx, deviceID, moduleID)
		if err != nil {
			return err
		}
		if err := change(cur); err != nil {
			return err
		}
		a := cur.Authentication
		var etag int64
		if err := tx.QueryRowContext(ctx, `UPDATE modules SET etag = etag + 1, managed_by = ?, auth_type = ?,
			primary_key = ?, secondary_key = ?, primary_thumbprint = ?, secondary_thumbprint = ?
			WHERE device_id = ? AND module_id = ? RETURNING etag`,
			cur.ManagedBy, a.Type, a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey,
			a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint, deviceID, moduleID).Scan(&etag); err != nil {
			return err
		}
		cur.ETag = registry.ETagString(etag)
		out = cur
		return nil
	})
	if err != nil {
		return nil, storeError("update module", err)
	}
	return out, nil
}

// Module returns one module.
func (db *DB) Module(ctx context.Context, deviceID, moduleID string) (*herd.Module, error) {
	m, err := scanModule(db.read.QueryRowContext(ctx, `SELECT `+moduleColumns+` FROM modules
		WHERE device_id = ? AND module_id = ?`, deviceID, moduleID))
	if errors.Is(err, sql.ErrNoRows) {
		if err := deviceExists(ctx, db.read, deviceID); err != nil {
			return nil, storeError("get module", err)
		}
		return nil, moduleNotFound(deviceID, moduleID)
	}
	if err != nil {
		return nil, fmt.Errorf("get module: %w", err)
	}
	return m, nil
}

// Modules returns a device's modules in id order.
func (db *DB) Modules(ctx context.Context, deviceID string) ([]*herd.Module, error) {
	if err := deviceExists(ctx, db.read, deviceID); err != nil {
		return nil, storeError("list modules", err)
	}
	rows, err := db.read.QueryContext(ctx, `SELECT `+moduleColumns+` FROM modules WHERE device_id = ? ORDER BY module_id`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("list modules: %w", err)
	}
	defer rows.Close()
	out := []*herd.Module{}
	for rows.Next() {
		m, err := scanModule(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteModule deletes a module and its twin.
func (db *DB) DeleteModule(ctx context.Context, deviceID, moduleID string, check func(*herd.Module) error) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		cur, err := currentModule(ctx, tx, deviceID, moduleID)
		if err != nil {
			return err
		}
		if err := check(cur); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM modules WHERE device_id = ? AND module_id = ?`, deviceID, moduleID)
		return err
	})
	return storeError("delete module", err)
}

// moduleTwin reads a module and its twin document with q.
func moduleTwin(ctx context.Context, q queryer, deviceID, moduleID string) (*herd.Module, *twin.Doc, error) {
	var raw rawDoc
	m, err := scanModuleWith(q.QueryRowContext(ctx, `SELECT `+moduleColumns+`, `+twinSelect+` FROM modules
		WHERE device_id = ? AND module_id = ?`, deviceID, moduleID), raw.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		if err := deviceExists(ctx, q, deviceID); err != nil {
			return nil, nil, err
		}
		return nil, nil, moduleNotFound(deviceID, moduleID)
	}
	if err != nil {
		return nil, nil, err
	}
	doc, err := raw.decode()
	if err != nil {
		return nil, nil, err
	}
	return m, doc, nil
}

// ModuleTwin returns a module's identity and twin document.
func (db *DB) ModuleTwin(ctx context.Context, deviceID, moduleID string) (*herd.Module, *twin.Doc, error) {
	m, doc, err := moduleTwin(ctx, db.read, deviceID, moduleID)
	if err != nil {
		return nil, nil, storeError("get module twin", err)
	}
	return m, doc, nil
}

// UpdateModuleTwin reads a module's twin, lets fn change it and writes it
// back, in one transaction.
func (db *DB) UpdateModuleTwin(ctx context.Context, deviceID, moduleID string, fn func(*herd.Module, *twin.Doc) error) (*herd.Module, *twin.Doc, error) {
	var (
		m   *herd.Module
		doc *twin.Doc
	)
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if m, doc, err = moduleTwin(ctx, tx, deviceID, moduleID); err != nil {
			return err
		}
		if err := fn(m, doc); err != nil {
			return err
		}
		args, err := encodeDoc(doc)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE modules SET twin_etag = ?, twin_version = ?, tags = jsonb(?), desired = jsonb(?),
			desired_version = ?, desired_metadata = jsonb(?), reported = jsonb(?), reported_version = ?,
			reported_metadata = jsonb(?) WHERE device_id = ? AND module_id = ?`, append(args, deviceID, moduleID)...)
		return err
	})
	if err != nil {
		return nil, nil, storeError("update module twin", err)
	}
	return m, doc, nil
}
