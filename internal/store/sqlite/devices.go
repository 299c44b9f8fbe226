package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

var (
	_ registry.Store = (*DB)(nil)
	_ twin.Store     = (*DB)(nil)
)

// identityInsert are the devices columns of a herd.Device, in the order
// scanDevice reads them (from identityColumns).
const identityInsert = `device_id, generation_id, etag, status, status_reason, status_updated_time,
	auth_type, primary_key, secondary_key, primary_thumbprint, secondary_thumbprint,
	iot_edge, device_scope, parent_scopes, connection_state, connection_state_updated_time,
	last_activity_time, c2d_message_count`

// identityColumns selects identityInsert, the device's activity as
// query.LastActivity has it.
var identityColumns = strings.Replace(identityInsert, "last_activity_time", query.LastActivity("devices", false), 1)

// twinColumns are the devices columns that make up a twin.Doc, in the
// order scanDoc reads them.
const twinColumns = `twin_etag, twin_version, tags, desired, desired_version, desired_metadata,
	reported, reported_version, reported_metadata`

// twinSelect reads twinColumns: the sections (migration 0010) and their
// $metadata trees (migration 0030) are stored as JSONB and read back as
// JSON text.
const twinSelect = `twin_etag, twin_version, json(tags), json(desired), desired_version, json(desired_metadata),
	json(reported), reported_version, json(reported_metadata)`

// twinValues are the placeholders that write twinColumns.
const twinValues = `?, ?, jsonb(?), jsonb(?), ?, jsonb(?), jsonb(?), ?, jsonb(?)`

type scanner interface{ Scan(dest ...any) error }

func parseTime(s string) herd.Time {
	t, _ := herd.ParseTime(s) // written by this package, always valid
	return t
}

// scanDevice reads identityColumns (and any extra destinations after them).
func scanDevice(row scanner, extra ...any) (*herd.Device, error) {
	var (
		d                              herd.Device
		etag                           int64
		statusTime, connTime, lastTime string
		iotEdge                        bool
		parentScopes                   string
	)
	dest := append([]any{&d.DeviceID, &d.GenerationID, &etag, &d.Status, &d.StatusReason, &statusTime,
		&d.Authentication.Type, &d.Authentication.SymmetricKey.PrimaryKey, &d.Authentication.SymmetricKey.SecondaryKey,
		&d.Authentication.X509Thumbprint.PrimaryThumbprint, &d.Authentication.X509Thumbprint.SecondaryThumbprint,
		&iotEdge, &d.DeviceScope, &parentScopes, &d.ConnectionState, &connTime, &lastTime,
		&d.CloudToDeviceMessageCount}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	d.ETag = registry.ETagString(etag)
	d.StatusUpdatedTime = parseTime(statusTime)
	d.ConnectionStateUpdatedTime = parseTime(connTime)
	d.LastActivityTime = parseTime(lastTime)
	d.Capabilities.IoTEdge = iotEdge
	if parentScopes != "" && parentScopes != "[]" {
		if err := json.Unmarshal([]byte(parentScopes), &d.ParentScopes); err != nil {
			return nil, fmt.Errorf("decode parent scopes: %w", err)
		}
	}
	return &d, nil
}

// rawDoc receives twinColumns before decoding.
type rawDoc struct {
	etag, version, desiredVersion, reportedVersion     int64
	tags, desired, desiredMeta, reported, reportedMeta string
}

func (r *rawDoc) dest() []any {
	return []any{&r.etag, &r.version, &r.tags, &r.desired, &r.desiredVersion, &r.desiredMeta,
		&r.reported, &r.reportedVersion, &r.reportedMeta}
}

func (r *rawDoc) decode() (*twin.Doc, error) {
	d := &twin.Doc{ETag: r.etag, Version: r.version, DesiredVersion: r.desiredVersion, ReportedVersion: r.reportedVersion}
	var err error
	for _, f := range []struct {
		dst *map[string]any
		src string
	}{{&d.Tags, r.tags}, {&d.Desired, r.desired}, {&d.DesiredMeta, r.desiredMeta},
		{&d.Reported, r.reported}, {&d.ReportedMeta, r.reportedMeta}} {
		if *f.dst, err = twin.Unmarshal(f.src); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// encodedDoc is a twin.Doc ready to be bound to twinColumns.
func encodeDoc(d *twin.Doc) ([]any, error) {
	out := []any{d.ETag, d.Version}
	for i, m := range []map[string]any{d.Tags, d.Desired, d.DesiredMeta, d.Reported, d.ReportedMeta} {
		s, err := twin.Marshal(m)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
		switch i {
		case 1:
			out = append(out, d.DesiredVersion)
		case 3:
			out = append(out, d.ReportedVersion)
		}
	}
	return out, nil
}

func notFound(id string) error {
	return herd.Errorf(herd.ErrDeviceNotFound, "device %q does not exist", id)
}

// Device returns one device.
func (db *DB) Device(ctx context.Context, id string) (*herd.Device, error) {
	d, err := scanDevice(db.stmts.device.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("get device %q: %w", id, err)
	}
	return d, nil
}

// DevicesByID reads many devices at once: those of ids that exist, by id.
func (db *DB) DevicesByID(ctx context.Context, ids []string) (map[string]*herd.Device, error) {
	devs, _, err := db.devicesByID(ctx, ids, false)
	return devs, err
}

// DevicesAndSessions reads many devices at once, and the persistent
// sessions of those that have one.
func (db *DB) DevicesAndSessions(ctx context.Context, ids []string) (map[string]*herd.Device, map[string]bus.Feature, error) {
	return db.devicesByID(ctx, ids, true)
}

func (db *DB) devicesByID(ctx context.Context, ids []string, withSessions bool) (map[string]*herd.Device, map[string]bus.Feature, error) {
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, nil, err
	}
	stmt := db.stmts.devicesByID
	var subs map[string]bus.Feature
	var sub sql.NullInt64
	var extra []any
	if withSessions {
		stmt, subs, extra = db.stmts.devicesAndSessions, map[string]bus.Feature{}, []any{&sub}
	}
	rows, err := stmt.QueryContext(ctx, string(list))
	if err != nil {
		return nil, nil, fmt.Errorf("get %d devices: %w", len(ids), err)
	}
	defer rows.Close()
	out := make(map[string]*herd.Device, len(ids))
	for rows.Next() {
		d, err := scanDevice(rows, extra...)
		if err != nil {
			return nil, nil, fmt.Errorf("get %d devices: %w", len(ids), err)
		}
		out[d.DeviceID] = d
		if sub.Valid {
			subs[d.DeviceID] = bus.Feature(sub.Int64)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("get %d devices: %w", len(ids), err)
	}
	return out, subs, nil
}

// Devices returns up to limit devices in id order.
func (db *DB) Devices(ctx context.Context, limit int) ([]*herd.Device, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+identityColumns+` FROM devices ORDER BY device_id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	out := []*herd.Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// RegistryStatistics counts devices by status.
func (db *DB) RegistryStatistics(ctx context.Context) (herd.RegistryStatistics, error) {
	var s herd.RegistryStatistics
	err := db.read.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(status = 'enabled'), 0), coalesce(sum(status = 'disabled'), 0) FROM devices`).
		Scan(&s.TotalDeviceCount, &s.EnabledDeviceCount, &s.DisabledDeviceCount)
	if err != nil {
		return s, fmt.Errorf("registry statistics: %w", err)
	}
	return s, nil
}

// ApplyDevices runs registry operations in one transaction.
func (db *DB) ApplyDevices(ctx context.Context, ops []registry.Op) ([]registry.Result, error) {
	res := make([]registry.Result, len(ops))
	err := db.tx(ctx, func(tx *sql.Tx) error {
		tp := &txPrepared{ctx: ctx, tx: tx}
		for i, op := range ops {
			d, err := applyOp(tp, op)
			if err != nil && herd.ErrorCodeOf(err) == herd.ErrInternal {
				return fmt.Errorf("%s: %w", op.DeviceID, err)
			}
			res[i] = registry.Result{Device: d, Err: err}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apply registry operations: %w", err)
	}
	return res, nil
}

// txPrepared prepares each statement text once per transaction: a bulk
// registry operation runs the same few statements for every device, and
// parsing them again for each was two fifths of a bulk import.
type txPrepared struct {
	ctx   context.Context
	tx    *sql.Tx
	stmts map[string]*sql.Stmt // closed by the transaction's end
}

func (p *txPrepared) stmt(text string) (*sql.Stmt, error) {
	if st, ok := p.stmts[text]; ok {
		return st, nil
	}
	st, err := p.tx.PrepareContext(p.ctx, text)
	if err != nil {
		return nil, err
	}
	if p.stmts == nil {
		p.stmts = map[string]*sql.Stmt{}
	}
	p.stmts[text] = st
	return st, nil
}

func (p *txPrepared) exec(text string, args ...any) (sql.Result, error) {
	st, err := p.stmt(text)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(p.ctx, args...)
}

func (p *txPrepared) queryRow(text string, args ...any) *sql.Row {
	st, err := p.stmt(text)
	if err != nil {
		// A *sql.Row carries its error to Scan; querying through the
		// transaction reports the same preparation error there.
		return p.tx.QueryRowContext(p.ctx, text, args...)
	}
	return st.QueryRowContext(p.ctx, args...)
}

func applyOp(tx *txPrepared, op registry.Op) (*herd.Device, error) {
	if op.Kind == registry.OpCreate {
		return insertDevice(tx, op.Device, op.Twin)
	}
	cur, err := scanDevice(tx.queryRow(`SELECT `+identityColumns+` FROM devices WHERE device_id = ?`, op.DeviceID))
	if errors.Is(err, sql.ErrNoRows) {
		if op.Kind == registry.OpUpdate && op.CreateIfMissing {
			return insertDevice(tx, op.Device, op.Twin)
		}
		return nil, notFound(op.DeviceID)
	}
	if err != nil {
		return nil, err
	}
	if err := op.Change(cur); err != nil {
		return nil, err
	}
	if op.Kind == registry.OpDelete {
		if _, err := tx.exec(`DELETE FROM devices WHERE device_id = ?`, op.DeviceID); err != nil {
			return nil, err
		}
		return cur, nil
	}
	scopes, err := json.Marshal(cur.ParentScopes)
	if err != nil {
		return nil, err
	}
	a := cur.Authentication
	row := tx.queryRow(`UPDATE devices SET etag = etag + 1, status = ?, status_reason = ?,
		status_updated_time = ?, auth_type = ?, primary_key = ?, secondary_key = ?,
		primary_thumbprint = ?, secondary_thumbprint = ?, iot_edge = ?, device_scope = ?, parent_scopes = ?
		WHERE device_id = ? RETURNING etag`,
		cur.Status, cur.StatusReason, cur.StatusUpdatedTime.String(), a.Type,
		a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey,
		a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint,
		cur.Capabilities.IoTEdge, cur.DeviceScope, string(scopes), op.DeviceID)
	var etag int64
	if err := row.Scan(&etag); err != nil {
		return nil, err
	}
	cur.ETag = registry.ETagString(etag)
	return cur, nil
}

func insertDevice(tx *txPrepared, d *herd.Device, doc *twin.Doc) (*herd.Device, error) {
	scopes, err := json.Marshal(d.ParentScopes)
	if err != nil {
		return nil, err
	}
	docArgs, err := encodeDoc(doc)
	if err != nil {
		return nil, err
	}
	a := d.Authentication
	args := append([]any{d.DeviceID, d.GenerationID, 1, d.Status, d.StatusReason, d.StatusUpdatedTime.String(),
		a.Type, a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey,
		a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint,
		d.Capabilities.IoTEdge, d.DeviceScope, string(scopes), string(herd.Disconnected),
		herd.Time{}.String(), herd.Time{}.String(), 0}, docArgs...)
	res, err := tx.exec(`INSERT INTO devices (`+identityInsert+`, `+twinColumns+`)
		VALUES (`+placeholders(len(args)-len(docArgs))+`, `+twinValues+`) ON CONFLICT (device_id) DO NOTHING`, args...)
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, err
	} else if n == 0 {
		return nil, herd.Errorf(herd.ErrDeviceAlreadyExists, "device %q already exists", d.DeviceID)
	}
	out := *d
	out.ETag = registry.ETagString(1)
	out.ConnectionState = herd.Disconnected
	return &out, nil
}

// connectionUpdate records a connection state change (?1, at ?2) made on
// node ?3 with activity ?4, in table %s, where %s: Connected moves the
// device to the node, Disconnected applies only on the node it is on.
const connectionUpdate = `UPDATE %s SET
	connection_state = CASE WHEN ?1 = 'Connected' OR conn_node = ?3 THEN ?1 ELSE connection_state END,
	connection_state_updated_time = CASE WHEN ?1 = 'Connected' OR conn_node = ?3 THEN ?2 ELSE connection_state_updated_time END,
	conn_node = CASE WHEN ?1 = 'Connected' THEN ?3 ELSE conn_node END,
	last_activity_time = max(last_activity_time, ?4)
	WHERE %s`

// deviceActivityUpsert and moduleActivityUpsert record activity ?1 of
// device ?2 (module ?3), if it exists, in its activity table: a row of
// its own, so as not to rewrite the device's (migration 0170).
const (
	deviceActivityUpsert = `INSERT INTO device_activity (device_id, last_activity_time)
		SELECT ?2, ?1 WHERE EXISTS (SELECT 1 FROM devices WHERE device_id = ?2)
		ON CONFLICT (device_id) DO UPDATE SET last_activity_time = excluded.last_activity_time
		WHERE excluded.last_activity_time > device_activity.last_activity_time`
	moduleActivityUpsert = `INSERT INTO module_activity (device_id, module_id, last_activity_time)
		SELECT ?2, ?3, ?1 WHERE EXISTS (SELECT 1 FROM modules WHERE device_id = ?2 AND module_id = ?3)
		ON CONFLICT (device_id, module_id) DO UPDATE SET last_activity_time = excluded.last_activity_time
		WHERE excluded.last_activity_time > module_activity.last_activity_time`
)

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// SetConnectionStates records a batch of connection changes. A
// disconnect changes the state only of a device still on the change's
// node; activity is recorded either way.
func (db *DB) SetConnectionStates(ctx context.Context, changes []registry.ConnectionChange) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		state, err := tx.PrepareContext(ctx, fmt.Sprintf(connectionUpdate, "devices", "device_id = ?5"))
		if err != nil {
			return err
		}
		defer state.Close()
		activity, err := tx.PrepareContext(ctx, deviceActivityUpsert)
		if err != nil {
			return err
		}
		defer activity.Close()
		for _, c := range changes {
			act := herd.NewTime(c.ActivityAt).String()
			if dev, mod := herd.SplitIdentity(c.DeviceID); mod != "" {
				// A module's connection (rare next to devices': not
				// prepared).
				if c.State != "" {
					_, err = tx.ExecContext(ctx, fmt.Sprintf(connectionUpdate, "modules", "device_id = ?5 AND module_id = ?6"),
						string(c.State), herd.NewTime(c.StateAt).String(), c.Node, act, dev, mod)
				} else {
					_, err = tx.ExecContext(ctx, moduleActivityUpsert, act, dev, mod)
				}
			} else if c.State != "" {
				_, err = state.ExecContext(ctx, string(c.State), herd.NewTime(c.StateAt).String(), c.Node, act, c.DeviceID)
			} else {
				_, err = activity.ExecContext(ctx, act, c.DeviceID)
			}
			if err != nil {
				return fmt.Errorf("record connection of %q: %w", c.DeviceID, err)
			}
		}
		return nil
	})
}

// Twin returns a device's identity and twin document.
func (db *DB) Twin(ctx context.Context, id string) (*herd.Device, *twin.Doc, error) {
	var raw rawDoc
	d, err := scanDevice(db.stmts.twin.QueryRowContext(ctx, id), raw.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, notFound(id)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get twin %q: %w", id, err)
	}
	doc, err := raw.decode()
	if err != nil {
		return nil, nil, fmt.Errorf("get twin %q: %w", id, err)
	}
	return d, doc, nil
}

// writeDoc stores a twin document.
func (db *DB) writeDoc(ctx context.Context, tx *sql.Tx, id string, doc *twin.Doc) error {
	args, err := encodeDoc(doc)
	if err != nil {
		return err
	}
	_, err = tx.StmtContext(ctx, db.stmts.writeDoc).ExecContext(ctx, append(args, id)...)
	return err
}
