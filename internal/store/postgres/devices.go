package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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

// twinColumns are the devices columns of a twin.Doc, in the order rawDoc
// reads them.
const twinColumns = `twin_etag, twin_version, tags, desired, desired_version, desired_metadata,
	reported, reported_version, reported_metadata`

func parseTime(s string) herd.Time {
	t, _ := herd.ParseTime(s) // written by this package, always valid
	return t
}

// scanDevice reads identityColumns (and any extra destinations after them).
func scanDevice(row pgx.Row, extra ...any) (*herd.Device, error) {
	var (
		d                              herd.Device
		etag                           int64
		statusTime, connTime, lastTime string
		parentScopes                   []byte
	)
	dest := append([]any{&d.DeviceID, &d.GenerationID, &etag, &d.Status, &d.StatusReason, &statusTime,
		&d.Authentication.Type, &d.Authentication.SymmetricKey.PrimaryKey, &d.Authentication.SymmetricKey.SecondaryKey,
		&d.Authentication.X509Thumbprint.PrimaryThumbprint, &d.Authentication.X509Thumbprint.SecondaryThumbprint,
		&d.Capabilities.IoTEdge, &d.DeviceScope, &parentScopes, &d.ConnectionState, &connTime, &lastTime,
		&d.CloudToDeviceMessageCount}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	d.ETag = registry.ETagString(etag)
	d.StatusUpdatedTime = parseTime(statusTime)
	d.ConnectionStateUpdatedTime = parseTime(connTime)
	d.LastActivityTime = parseTime(lastTime)
	if len(parentScopes) > 0 && string(parentScopes) != "[]" && string(parentScopes) != "null" {
		if err := json.Unmarshal(parentScopes, &d.ParentScopes); err != nil {
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

// encodeDoc is a twin.Doc ready to be bound to twinColumns (sections as
// raw JSON, which pgx sends to jsonb as it is).
func encodeDoc(d *twin.Doc) ([]any, error) {
	out := []any{d.ETag, d.Version}
	for i, m := range []map[string]any{d.Tags, d.Desired, d.DesiredMeta, d.Reported, d.ReportedMeta} {
		s, err := twin.Marshal(m)
		if err != nil {
			return nil, err
		}
		out = append(out, json.RawMessage(s))
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
	d, err := scanDevice(db.pool.QueryRow(ctx, `SELECT `+identityColumns+` FROM devices WHERE device_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	q := `SELECT ` + identityColumns + ` FROM devices WHERE device_id = ANY($1)`
	var subs map[string]bus.Feature
	var sub *int32
	var extra []any
	if withSessions {
		q = `SELECT ` + identityColumns + `, s.subscriptions FROM devices
			LEFT JOIN device_sessions s USING (device_id) WHERE device_id = ANY($1)`
		subs, extra = map[string]bus.Feature{}, []any{&sub}
	}
	rows, err := db.pool.Query(ctx, q, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("get %d devices: %w", len(ids), err)
	}
	defer rows.Close()
	out := make(map[string]*herd.Device, len(ids))
	for rows.Next() {
		sub = nil
		d, err := scanDevice(rows, extra...)
		if err != nil {
			return nil, nil, fmt.Errorf("get %d devices: %w", len(ids), err)
		}
		out[d.DeviceID] = d
		if sub != nil {
			subs[d.DeviceID] = bus.Feature(*sub)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("get %d devices: %w", len(ids), err)
	}
	return out, subs, nil
}

// Devices returns up to limit devices in id order.
func (db *DB) Devices(ctx context.Context, limit int) ([]*herd.Device, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+identityColumns+` FROM devices ORDER BY device_id LIMIT $1`, limit)
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
	err := db.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'enabled'),
		count(*) FILTER (WHERE status = 'disabled') FROM devices`).
		Scan(&s.TotalDeviceCount, &s.EnabledDeviceCount, &s.DisabledDeviceCount)
	if err != nil {
		return s, fmt.Errorf("registry statistics: %w", err)
	}
	return s, nil
}

// ApplyDevices runs registry operations in one transaction; an op that
// fails is rolled back to its savepoint and the others go on.
func (db *DB) ApplyDevices(ctx context.Context, ops []registry.Op) ([]registry.Result, error) {
	res := make([]registry.Result, len(ops))
	err := db.tx(ctx, func(tx pgx.Tx) error {
		for i, op := range ops {
			sp, err := tx.Begin(ctx) // a savepoint
			if err != nil {
				return err
			}
			d, err := applyOp(ctx, sp, op)
			if err != nil {
				if rerr := sp.Rollback(ctx); rerr != nil {
					return rerr
				}
				if herd.ErrorCodeOf(err) == herd.ErrInternal {
					return fmt.Errorf("%s: %w", op.DeviceID, err)
				}
				res[i] = registry.Result{Err: err}
				continue
			}
			if err := sp.Commit(ctx); err != nil {
				return err
			}
			res[i] = registry.Result{Device: d}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apply registry operations: %w", err)
	}
	return res, nil
}

func applyOp(ctx context.Context, tx pgx.Tx, op registry.Op) (*herd.Device, error) {
	if op.Kind == registry.OpCreate {
		return insertDevice(ctx, tx, op.Device, op.Twin)
	}
	cur, err := scanDevice(tx.QueryRow(ctx, `SELECT `+identityColumns+` FROM devices WHERE device_id = $1 FOR UPDATE`, op.DeviceID))
	if errors.Is(err, pgx.ErrNoRows) {
		if op.Kind == registry.OpUpdate && op.CreateIfMissing {
			return insertDevice(ctx, tx, op.Device, op.Twin)
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
		if _, err := tx.Exec(ctx, `DELETE FROM devices WHERE device_id = $1`, op.DeviceID); err != nil {
			return nil, err
		}
		return cur, nil
	}
	scopes, err := scopesJSON(cur.ParentScopes)
	if err != nil {
		return nil, err
	}
	a := cur.Authentication
	var etag int64
	err = tx.QueryRow(ctx, `UPDATE devices SET etag = etag + 1, status = $1, status_reason = $2,
		status_updated_time = $3, auth_type = $4, primary_key = $5, secondary_key = $6,
		primary_thumbprint = $7, secondary_thumbprint = $8, iot_edge = $9, device_scope = $10, parent_scopes = $11
		WHERE device_id = $12 RETURNING etag`,
		string(cur.Status), cur.StatusReason, cur.StatusUpdatedTime.String(), string(a.Type),
		a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey,
		a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint,
		cur.Capabilities.IoTEdge, cur.DeviceScope, scopes, op.DeviceID).Scan(&etag)
	if err != nil {
		return nil, err
	}
	cur.ETag = registry.ETagString(etag)
	return cur, nil
}

func scopesJSON(s []string) (json.RawMessage, error) {
	if s == nil {
		s = []string{}
	}
	b, err := json.Marshal(s)
	return b, err
}

func insertDevice(ctx context.Context, tx pgx.Tx, d *herd.Device, doc *twin.Doc) (*herd.Device, error) {
	scopes, err := scopesJSON(d.ParentScopes)
	if err != nil {
		return nil, err
	}
	docArgs, err := encodeDoc(doc)
	if err != nil {
		return nil, err
	}
	a := d.Authentication
	args := append([]any{d.DeviceID, d.GenerationID, int64(1), string(d.Status), d.StatusReason, d.StatusUpdatedTime.String(),
		string(a.Type), a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey,
		a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint,
		d.Capabilities.IoTEdge, d.DeviceScope, scopes, string(herd.Disconnected),
		herd.Time{}.String(), herd.Time{}.String(), int64(0)}, docArgs...)
	tag, err := tx.Exec(ctx, `INSERT INTO devices (`+identityInsert+`, `+twinColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
		$19, $20, $21, $22, $23, $24, $25, $26, $27) ON CONFLICT (device_id) DO NOTHING`, args...)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 0 {
		return nil, herd.Errorf(herd.ErrDeviceAlreadyExists, "device %q already exists", d.DeviceID)
	}
	out := *d
	out.ETag = registry.ETagString(1)
	out.ConnectionState = herd.Disconnected
	return &out, nil
}

// SetConnectionStates records a batch of connection changes in one
// round trip, a statement per table (activity never moves backwards). A
// change with an epoch (cluster mode) changes the state only while the
// device's connection epoch is still that one; without, a disconnect
// changes the state only of a device still on the change's node.
// Activity is recorded either way: with a state change in the device's
// (module's) row, which that rewrites anyway, and without one in its
// activity table (migration 0018).
func (db *DB) SetConnectionStates(ctx context.Context, changes []registry.ConnectionChange) error {
	var ids, nodes, states, stateAts, acts []*string
	var epochs []int64
	var mIDs, mMods, mNodes, mStates, mStateAts, mActs []*string
	var mEpochs []int64
	activity := map[[2]string]string{} // the latest activity by device and module
	for _, c := range changes {
		dev, mod := herd.SplitIdentity(c.DeviceID)
		act := herd.NewTime(c.ActivityAt).String()
		if c.State == "" {
			if k := [2]string{dev, mod}; act > activity[k] {
				activity[k] = act
			}
			continue
		}
		node := c.Node
		s, t := string(c.State), herd.NewTime(c.StateAt).String()
		if mod != "" {
			mIDs, mMods, mNodes, mStates, mStateAts, mActs = append(mIDs, &dev), append(mMods, &mod), append(mNodes, &node),
				append(mStates, &s), append(mStateAts, &t), append(mActs, &act)
			mEpochs = append(mEpochs, c.Epoch)
			continue
		}
		ids, nodes, states, stateAts, acts = append(ids, &dev), append(nodes, &node), append(states, &s), append(stateAts, &t), append(acts, &act)
		epochs = append(epochs, c.Epoch)
	}
	if len(ids) == 0 && len(mIDs) == 0 && len(activity) == 0 {
		return nil
	}
	// In key order, so that batches that share devices lock their
	// activity rows in the same order.
	keys := make([][2]string, 0, len(activity))
	for k := range activity {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1]))
	})
	var aIDs, aActs, maIDs, maMods, maActs []string
	for _, k := range keys {
		if k[1] == "" {
			aIDs, aActs = append(aIDs, k[0]), append(aActs, activity[k])
		} else {
			maIDs, maMods, maActs = append(maIDs, k[0]), append(maMods, k[1]), append(maActs, activity[k])
		}
	}
	b := &pgx.Batch{}
	b.Queue(keyedPlanningSQL)
	if len(ids) > 0 {
		b.Queue(deviceConnectionsSQL, ids, nodes, states, stateAts, acts, epochs)
	}
	if len(mIDs) > 0 {
		b.Queue(moduleConnectionsSQL, mIDs, mMods, mNodes, mStates, mStateAts, mActs, mEpochs)
	}
	if len(aIDs) > 0 {
		b.Queue(deviceActivitySQL, aIDs, aActs)
	}
	if len(maIDs) > 0 {
		b.Queue(moduleActivitySQL, maIDs, maMods, maActs)
	}
	err := db.batch(ctx, b, nil)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" && (pe.TableName == "device_activity" || pe.TableName == "module_activity") {
		// A device (module) of the batch was deleted between the
		// statement's check that it exists and its insert: once more,
		// which no longer finds it. The batch is idempotent.
		err = db.batch(ctx, b, nil)
	}
	if err != nil {
		return fmt.Errorf("record connection states: %w", err)
	}
	return nil
}

// deviceActivitySQL and moduleActivitySQL record the activity of
// devices (modules) that exist, as parallel arrays, in their activity
// tables.
const (
	deviceActivitySQL = `INSERT INTO device_activity AS a (device_id, last_activity_time)
		SELECT c.id, c.act FROM unnest($1::text[], $2::text[]) AS c(id, act)
		WHERE EXISTS (SELECT FROM devices d WHERE d.device_id = c.id)
		ON CONFLICT (device_id) DO UPDATE SET last_activity_time = EXCLUDED.last_activity_time
		WHERE a.last_activity_time < EXCLUDED.last_activity_time`
	moduleActivitySQL = `INSERT INTO module_activity AS a (device_id, module_id, last_activity_time)
		SELECT c.id, c.mid, c.act FROM unnest($1::text[], $2::text[], $3::text[]) AS c(id, mid, act)
		WHERE EXISTS (SELECT FROM modules m WHERE m.device_id = c.id AND m.module_id = c.mid)
		ON CONFLICT (device_id, module_id) DO UPDATE SET last_activity_time = EXCLUDED.last_activity_time
		WHERE a.last_activity_time < EXCLUDED.last_activity_time`
)

// deviceConnectionsSQL and moduleConnectionsSQL record connection
// changes of devices and modules, as parallel arrays.
var (
	deviceConnectionsSQL = connectionUpdate("devices d", "d",
		"unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) AS c(id, node, state, state_at, act, epoch)",
		"d.device_id = c.id")
	moduleConnectionsSQL = connectionUpdate("modules m", "m",
		"unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[]) AS c(id, mid, node, state, state_at, act, epoch)",
		"m.device_id = c.id AND m.module_id = c.mid")
)

// keyedPlanningSQL, first in a transaction that writes a batch of listed
// devices joined from arrays (connection changes, sessions), makes the
// rest of it look each listed device up in its primary key.
//
// Left to itself the planner joins a batch of a few thousand devices by
// hashing (or merging with) the whole devices table: a scan of every
// device for each batch, so the batches of a larger fleet cost more per
// device (a 3,400-device batch of activity took 150 ms in a
// 100,000-device method job). Lookups cost what the batch holds, whatever
// the fleet. JIT compilation is off as well: the lookups of a large batch
// cost enough for PostgreSQL to compile the statement, which takes longer
// than running it.
const keyedPlanningSQL = `SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true),
	set_config('jit', 'off', true)`

// connectionUpdate records connection changes c (the FROM list) in table
// (aliased t), where match: their states and activity. A change with an
// epoch sets the state while the row's epoch is its own (its node claimed
// the connection: ClaimConnections); without one, Connected moves the
// device to the change's node and Disconnected applies only on the node
// it is on.
func connectionUpdate(table, t, from, match string) string {
	applies := strings.NewReplacer("T.", t+".").Replace(`c.state IS NOT NULL AND
		(c.epoch <> 0 AND T.conn_epoch = c.epoch OR c.epoch = 0 AND (c.state = 'Connected' OR T.conn_node = c.node))`)
	return `UPDATE ` + table + ` SET
	connection_state = CASE WHEN ` + applies + ` THEN c.state ELSE ` + t + `.connection_state END,
	connection_state_updated_time = CASE WHEN ` + applies + ` THEN c.state_at ELSE ` + t + `.connection_state_updated_time END,
	conn_node = CASE WHEN c.state = 'Connected' AND c.epoch = 0 THEN c.node ELSE ` + t + `.conn_node END,
	last_activity_time = GREATEST(` + t + `.last_activity_time, c.act)
	FROM ` + from + `
	WHERE ` + match
}

// ClaimConnections records the connections of devices (and modules:
// {deviceId}/{moduleId}) accepted at at as node's, each raising its
// connection epoch: the epochs by identity, for those that exist. A
// device's connections on several nodes are ordered by their epochs.
func (db *DB) ClaimConnections(ctx context.Context, node string, ids []string, at time.Time) (map[string]int64, error) {
	stamp := herd.NewTime(at).String()
	var devs []string
	out := make(map[string]int64, len(ids))
	for _, id := range ids {
		dev, mod := herd.SplitIdentity(id)
		if mod == "" {
			devs = append(devs, id)
			continue
		}
		var epoch int64 // a module's: rare next to devices', one by one
		err := db.pool.QueryRow(ctx, `UPDATE modules SET conn_epoch = conn_epoch + 1, conn_node = $1,
			connection_state = 'Connected', connection_state_updated_time = $2, last_activity_time = GREATEST(last_activity_time, $2)
			WHERE device_id = $3 AND module_id = $4 RETURNING conn_epoch`, node, stamp, dev, mod).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("claim the connection of %q: %w", id, err)
		}
		out[id] = epoch
	}
	if len(devs) == 0 {
		return out, nil
	}
	rows, err := db.pool.Query(ctx, `UPDATE devices SET conn_epoch = conn_epoch + 1, conn_node = $1,
		connection_state = 'Connected', connection_state_updated_time = $2, last_activity_time = GREATEST(last_activity_time, $2)
		WHERE device_id = ANY($3) RETURNING device_id, conn_epoch`, node, stamp, devs)
	if err != nil {
		return nil, fmt.Errorf("claim %d connections: %w", len(devs), err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var epoch int64
		if err := rows.Scan(&id, &epoch); err != nil {
			return nil, fmt.Errorf("claim %d connections: %w", len(devs), err)
		}
		out[id] = epoch
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim %d connections: %w", len(devs), err)
	}
	return out, nil
}

// Twin returns a device's identity and twin document.
func (db *DB) Twin(ctx context.Context, id string) (*herd.Device, *twin.Doc, error) {
	var raw rawDoc
	d, err := scanDevice(db.pool.QueryRow(ctx, `SELECT `+identityColumns+`, `+twinColumns+` FROM devices WHERE device_id = $1`, id), raw.dest()...)
	if errors.Is(err, pgx.ErrNoRows) {
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

// UpdateTwin reads a twin under a row lock, lets fn change it and writes
// it, in one transaction; if fn fails nothing is written.
func (db *DB) UpdateTwin(ctx context.Context, id string, fn func(*herd.Device, *twin.Doc) error) (*herd.Device, *twin.Doc, error) {
	var dev *herd.Device
	var doc *twin.Doc
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var raw rawDoc
		d, err := scanDevice(tx.QueryRow(ctx, `SELECT `+identityColumns+`, `+twinColumns+` FROM devices WHERE device_id = $1 FOR UPDATE`, id), raw.dest()...)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(id)
		}
		if err != nil {
			return err
		}
		if doc, err = raw.decode(); err != nil {
			return err
		}
		if err := fn(d, doc); err != nil {
			return err
		}
		dev = d
		return writeDoc(ctx, tx, id, doc)
	})
	if err != nil {
		if herd.ErrorCodeOf(err) != herd.ErrInternal {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("update twin %q: %w", id, err)
	}
	return dev, doc, nil
}

// writeDoc stores a twin document.
func writeDoc(ctx context.Context, tx pgx.Tx, id string, doc *twin.Doc) error {
	args, err := encodeDoc(doc)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE devices SET twin_etag = $1, twin_version = $2, tags = $3, desired = $4,
		desired_version = $5, desired_metadata = $6, reported = $7, reported_version = $8, reported_metadata = $9
		WHERE device_id = $10`, append(args, id)...)
	return err
}
