package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

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

func scanModule(row pgx.Row) (*herd.Module, error) { return scanModuleWith(row) }

// scanModuleWith reads moduleColumns and any extra destinations after them.
func scanModuleWith(row pgx.Row, extra ...any) (*herd.Module, error) {
	var (
		m                      herd.Module
		etag, c2d              int64
		state, connTime, lastT string
	)
	a := &m.Authentication
	if err := row.Scan(append([]any{&m.DeviceID, &m.ModuleID, &m.GenerationID, &etag, &m.ManagedBy, &a.Type,
		&a.SymmetricKey.PrimaryKey, &a.SymmetricKey.SecondaryKey, &a.X509Thumbprint.PrimaryThumbprint,
		&a.X509Thumbprint.SecondaryThumbprint, &state, &connTime, &lastT, &c2d}, extra...)...); err != nil {
		return nil, err
	}
	m.ETag = registry.ETagString(etag)
	m.ConnectionState = herd.ConnectionState(state)
	m.ConnectionStateUpdatedTime = parseTime(connTime)
	m.LastActivityTime = parseTime(lastT)
	m.CloudToDeviceMessageCount = int(c2d)
	return &m, nil
}

func moduleNotFound(deviceID, moduleID string) error {
	return herd.Errorf(herd.ErrModuleNotFound, "device %q has no module %q", deviceID, moduleID)
}

// deviceExists answers DeviceNotFound unless the device exists; lock is ""
// or a locking clause.
func deviceExists(ctx context.Context, q queryer, id, lock string) error {
	var one int
	err := q.QueryRow(ctx, `SELECT 1 FROM devices WHERE device_id = $1`+lock, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound(id)
	}
	return err
}

// storeError keeps a *herd.Error as it is and wraps anything else.
func storeError(op string, err error) error {
	if herd.ErrorCodeOf(err) != herd.ErrInternal {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// CreateModule stores a new module of an existing device.
func (db *DB) CreateModule(ctx context.Context, m *herd.Module, doc *twin.Doc) (*herd.Module, error) {
	docArgs, err := encodeDoc(doc)
	if err != nil {
		return nil, err
	}
	err = db.tx(ctx, func(tx pgx.Tx) error {
		// The device's row locked: its modules are counted and created
		// one creator at a time, and it is not deleted meanwhile.
		if err := deviceExists(ctx, tx, m.DeviceID, " FOR UPDATE"); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM modules WHERE device_id = $1`, m.DeviceID).Scan(&n); err != nil {
			return err
		}
		if n >= registry.MaxModulesPerDevice {
			return herd.Errorf(herd.ErrArgumentInvalid, "device %q has %d modules, the most a device may have", m.DeviceID, n)
		}
		a := m.Authentication
		args := append([]any{m.DeviceID, m.ModuleID, m.GenerationID, int64(1), m.ManagedBy, a.Type,
			a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey, a.X509Thumbprint.PrimaryThumbprint,
			a.X509Thumbprint.SecondaryThumbprint, string(herd.Disconnected), herd.Time{}.String(), herd.Time{}.String(), int64(0)},
			docArgs...)
		marks := make([]string, len(args))
		for i := range marks {
			marks[i] = "$" + strconv.Itoa(i+1)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO modules (`+moduleInsert+`, `+twinColumns+`)
			VALUES (`+strings.Join(marks, ", ")+`) ON CONFLICT (device_id, module_id) DO NOTHING`, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
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

// currentModule reads a module for update, or answers DeviceNotFound or
// ModuleNotFound.
func currentModule(ctx context.Context, tx pgx.Tx, deviceID, moduleID string) (*herd.Module, error) {
	m, err := scanModule(tx.QueryRow(ctx, `SELECT `+moduleColumns+` FROM modules
		WHERE device_id = $1 AND module_id = $2 FOR UPDATE`, deviceID, moduleID))
	if errors.Is(err, pgx.ErrNoRows) {
		if err := deviceExists(ctx, tx, deviceID, ""); err != nil {
			return nil, err
		}
		return nil, moduleNotFound(deviceID, moduleID)
	}
	return m, err
}

// UpdateModule changes a module in one transaction.
func (db *DB) UpdateModule(ctx context.Context, deviceID, moduleID string, change func(*herd.Module) error) (*herd.Module, error) {
	var out *herd.Module
	err := db.tx(ctx, func(tx pgx.Tx) error {
		cur, err := currentModule(ctx, tx, deviceID, moduleID)
		if err != nil {
			return err
		}
		if err := change(cur); err != nil {
			return err
		}
		a := cur.Authentication
		var etag int64
		if err := tx.QueryRow(ctx, `UPDATE modules SET etag = etag + 1, managed_by = $1, auth_type = $2,
			primary_key = $3, secondary_key = $4, primary_thumbprint = $5, secondary_thumbprint = $6
			WHERE device_id = $7 AND module_id = $8 RETURNING etag`,
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
	m, err := scanModule(db.pool.QueryRow(ctx, `SELECT `+moduleColumns+` FROM modules
		WHERE device_id = $1 AND module_id = $2`, deviceID, moduleID))
	if errors.Is(err, pgx.ErrNoRows) {
		if err := deviceExists(ctx, db.pool, deviceID, ""); err != nil {
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
	if err := deviceExists(ctx, db.pool, deviceID, ""); err != nil {
		return nil, storeError("list modules", err)
	}
	rows, err := db.pool.Query(ctx, `SELECT `+moduleColumns+` FROM modules WHERE device_id = $1 ORDER BY module_id`, deviceID)
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
	err := db.tx(ctx, func(tx pgx.Tx) error {
		cur, err := currentModule(ctx, tx, deviceID, moduleID)
		if err != nil {
			return err
		}
		if err := check(cur); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM modules WHERE device_id = $1 AND module_id = $2`, deviceID, moduleID)
		return err
	})
	return storeError("delete module", err)
}

// moduleTwin reads a module and its twin document with q; lock is "" or
// a locking clause.
func moduleTwin(ctx context.Context, q queryer, deviceID, moduleID, lock string) (*herd.Module, *twin.Doc, error) {
	var raw rawDoc
	m, err := scanModuleWith(q.QueryRow(ctx, `SELECT `+moduleColumns+`, `+twinColumns+` FROM modules
		WHERE device_id = $1 AND module_id = $2`+lock, deviceID, moduleID), raw.dest()...)
	if errors.Is(err, pgx.ErrNoRows) {
		if err := deviceExists(ctx, q, deviceID, ""); err != nil {
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
	m, doc, err := moduleTwin(ctx, db.pool, deviceID, moduleID, "")
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
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var err error
		if m, doc, err = moduleTwin(ctx, tx, deviceID, moduleID, " FOR UPDATE"); err != nil {
			return err
		}
		if err := fn(m, doc); err != nil {
			return err
		}
		args, err := encodeDoc(doc)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE modules SET twin_etag = $1, twin_version = $2, tags = $3, desired = $4,
			desired_version = $5, desired_metadata = $6, reported = $7, reported_version = $8, reported_metadata = $9
			WHERE device_id = $10 AND module_id = $11`, append(args, deviceID, moduleID)...)
		return err
	})
	if err != nil {
		return nil, nil, storeError("update module twin", err)
	}
	return m, doc, nil
}
