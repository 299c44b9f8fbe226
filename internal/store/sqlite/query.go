package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	sqlite "modernc.org/sqlite"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

var _ query.Store = (*DB)(nil)

var registerOnce sync.Once

// registerFunctions registers the SQL functions that compiled queries use
// (query.SQLite): the wire forms of the twin and device etag counters, and
// herd_aggregate, a one-pass hash aggregation (query.Grouper).
// The driver keeps them for every connection opened afterwards.
func registerFunctions() error {
	var err error
	registerOnce.Do(func() {
		etag := func(format func(int64) string) func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
			return func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
				n, ok := args[0].(int64)
				if !ok {
					return nil, nil
				}
				return format(n), nil
			}
		}
		err = sqlite.RegisterDeterministicScalarFunction("herd_twin_etag", 1, etag(twin.ETagString))
		if err == nil {
			err = sqlite.RegisterDeterministicScalarFunction("herd_device_etag", 1, etag(registry.ETagString))
		}
		if err == nil {
			// VolatileArgs: query.Grouper copies every string it keeps.
			err = sqlite.RegisterFunction("herd_aggregate", &sqlite.FunctionImpl{NArgs: -1, VolatileArgs: true,
				MakeAggregate: func(sqlite.FunctionContext) (sqlite.AggregateFunction, error) { return &grouper{}, nil }})
		}
	})
	return err
}

// RunQuery runs one page of a parsed query (query.Store).
func (db *DB) RunQuery(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	var (
		items []any
		next  *query.Cursor
		err   error
	)
	switch {
	case q.Aggregated():
		items, next, err = db.aggregate(ctx, q, size, cur)
	case q.From == query.DeviceJobs:
		items, next, err = db.deviceJobs(ctx, q, size, cur)
	case q.From == query.DeviceModules:
		items, next, err = db.moduleTwins(ctx, q, size, cur)
	default:
		items, next, err = db.twins(ctx, q, size, cur)
	}
	if err != nil {
		if herd.ErrorCodeOf(err) != herd.ErrInternal {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("run query %q: %w", q, err)
	}
	return items, next, nil
}

// condition compiles the WHERE clause; compile errors are the caller's.
func condition(q *query.Query) (query.SQL, error) {
	c, err := query.CompileCondition(query.SQLite, q, "")
	if err != nil {
		return c, query.AsHerdError(err)
	}
	return c, nil
}

func cursorKeys(cur *query.Cursor, n int) ([]string, error) {
	if cur == nil {
		return make([]string, n), nil
	}
	if len(cur.Keys) != n {
		return nil, herd.Errorf(herd.ErrArgumentInvalid, "the continuation token does not belong to this query")
	}
	return cur.Keys, nil
}

// twins returns twins (SELECT *) or projection rows. The inner select
// finds the page's device ids, usually from the covering index
// devices_query alone; the outer one reads their rows.
func (db *DB) twins(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	cond, err := condition(q)
	if err != nil {
		return nil, nil, err
	}
	keys, err := cursorKeys(cur, 1)
	if err != nil {
		return nil, nil, err
	}
	text := `SELECT ` + identityColumns + `, ` + twinSelect + ` FROM devices WHERE device_id IN (
		SELECT device_id FROM devices WHERE (` + cond.Text + `) AND device_id > ?
		ORDER BY device_id LIMIT ?) ORDER BY device_id`
	rows, err := db.read.QueryContext(ctx, text, append(cond.Args, keys[0], size+1)...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var items []any
	var last *herd.Twin
	for rows.Next() {
		if len(items) == size {
			return items, &query.Cursor{Keys: []string{last.DeviceID}}, nil
		}
		var raw rawDoc
		dev, err := scanDevice(rows, raw.dest()...)
		if err != nil {
			return nil, nil, err
		}
		doc, err := raw.decode()
		if err != nil {
			return nil, nil, err
		}
		last = twin.View(dev, doc)
		it, err := q.Item(last)
		if err != nil {
			return nil, nil, err
		}
		items = append(items, it)
	}
	return items, nil, rows.Err()
}

// moduleTwins returns module twins (SELECT * FROM devices.modules) or
// projection rows, in (device, module) order.
func (db *DB) moduleTwins(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	cond, err := condition(q)
	if err != nil {
		return nil, nil, err
	}
	keys, err := cursorKeys(cur, 2)
	if err != nil {
		return nil, nil, err
	}
	text := `SELECT ` + moduleColumns + `, ` + twinSelect + ` FROM modules
		WHERE (` + cond.Text + `) AND (device_id, module_id) > (?, ?) ORDER BY device_id, module_id LIMIT ?`
	rows, err := db.read.QueryContext(ctx, text, append(cond.Args, keys[0], keys[1], size+1)...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var items []any
	var last *herd.Twin
	for rows.Next() {
		if len(items) == size {
			return items, &query.Cursor{Keys: []string{last.DeviceID, last.ModuleID}}, nil
		}
		var raw rawDoc
		m, err := scanModuleWith(rows, raw.dest()...)
		if err != nil {
			return nil, nil, err
		}
		doc, err := raw.decode()
		if err != nil {
			return nil, nil, err
		}
		last = twin.ModuleView(m, doc)
		it, err := q.Item(last)
		if err != nil {
			return nil, nil, err
		}
		items = append(items, it)
	}
	return items, nil, rows.Err()
}

// deviceJobColumns are the device_jobs columns of a herd.DeviceJob.
const deviceJobColumns = `job_id, device_id, job_type, status, start_time, end_time, created_time,
	last_updated_time, outcome, error_code, error_description, attempts`

func (db *DB) deviceJobs(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	cond, err := condition(q)
	if err != nil {
		return nil, nil, err
	}
	keys, err := cursorKeys(cur, 2)
	if err != nil {
		return nil, nil, err
	}
	text := `SELECT ` + deviceJobColumns + ` FROM device_jobs
		WHERE (` + cond.Text + `) AND (job_id, device_id) > (?, ?)
		ORDER BY job_id, device_id LIMIT ?`
	rows, err := db.read.QueryContext(ctx, text, append(cond.Args, keys[0], keys[1], size+1)...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var items []any
	var next *query.Cursor
	for rows.Next() {
		if len(items) == size {
			last := items[len(items)-1].(*herd.DeviceJob)
			next = &query.Cursor{Keys: []string{last.JobID, last.DeviceID}}
			break
		}
		j, err := scanDeviceJob(rows)
		if err != nil {
			return nil, nil, err
		}
		items = append(items, j)
	}
	return items, next, rows.Err()
}

// scanDeviceJob reads deviceJobColumns into the record that
// SELECT * FROM devices.jobs returns (§6.5).
func scanDeviceJob(row scanner) (*herd.DeviceJob, error) {
	var (
		j                                herd.DeviceJob
		start, end, created, updated     string
		outcome, errCode, errDescription sql.NullString
	)
	if err := row.Scan(&j.JobID, &j.DeviceID, &j.JobType, &j.Status, &start, &end, &created, &updated,
		&outcome, &errCode, &errDescription, &j.Attempts); err != nil {
		return nil, err
	}
	j.StartTimeUTC, j.EndTimeUTC = parseTime(start), parseTime(end)
	j.CreatedDateTimeUTC, j.LastUpdatedDateTimeUTC = parseTime(created), parseTime(updated)
	if outcome.Valid {
		j.Outcome = &herd.DeviceJobOutcome{}
		if err := json.Unmarshal([]byte(outcome.String), j.Outcome); err != nil {
			return nil, fmt.Errorf("decode outcome of %s/%s: %w", j.JobID, j.DeviceID, err)
		}
	}
	if errCode.Valid {
		j.Error = &herd.DeviceJobError{Code: errCode.String, Description: errDescription.String}
	}
	return &j, nil
}

// aggregate runs an aggregation and returns the page of its rows after
// the cursor's offset.
func (db *DB) aggregate(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	a, err := query.CompileAggregate(query.SQLite, q)
	if err != nil {
		return nil, nil, query.AsHerdError(err)
	}
	keys, err := cursorKeys(cur, 1)
	if err != nil {
		return nil, nil, err
	}
	skip := 0
	if keys[0] != "" {
		if skip, err = strconv.Atoi(keys[0]); err != nil || skip < 0 {
			return nil, nil, herd.Errorf(herd.ErrArgumentInvalid, "the continuation token does not belong to this query")
		}
	}
	if a.Packed() {
		var packed string
		if err := db.read.QueryRowContext(ctx, a.SQL.Text, a.SQL.Args...).Scan(&packed); err != nil {
			return nil, nil, err
		}
		all, err := a.Unpack(packed)
		if err != nil {
			return nil, nil, err
		}
		if skip > len(all) {
			skip = len(all)
		}
		var items []any
		for _, r := range all[skip:min(len(all), skip+size)] {
			items = append(items, r)
		}
		var next *query.Cursor
		if skip+size < len(all) {
			next = &query.Cursor{Keys: []string{strconv.Itoa(skip + size)}}
		}
		return items, next, nil
	}
	rows, err := db.read.QueryContext(ctx, a.SQL.Text, a.SQL.Args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	vals := make([]any, a.Columns())
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var items []any
	var next *query.Cursor
	for i := 0; rows.Next(); i++ {
		if i < skip {
			continue
		}
		if len(items) == size {
			next = &query.Cursor{Keys: []string{strconv.Itoa(i)}}
			break
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, nil, err
		}
		row, err := a.Decode(vals)
		if err != nil {
			return nil, nil, err
		}
		items = append(items, row)
	}
	return items, next, rows.Err()
}

// grouper adapts query.Grouper to SQLite's aggregate function interface:
// herd_aggregate(spec, values…) returns every group as JSON.
type grouper struct {
	g   *query.Grouper
	err error
}

func (a *grouper) Step(_ *sqlite.FunctionContext, args []driver.Value) error {
	if a.g == nil {
		spec, _ := args[0].(string)
		if a.g, a.err = query.NewGrouper(spec); a.err != nil {
			return a.err
		}
	}
	vals := make([]any, len(args)-1)
	for i, v := range args[1:] {
		vals[i] = v
	}
	return a.g.Step(vals)
}

func (a *grouper) WindowInverse(*sqlite.FunctionContext, []driver.Value) error {
	return fmt.Errorf("herd_aggregate is not a window function")
}

// WindowValue returns the result; over no rows Step never ran, and the
// spec is unknown: the compiler's Unpack then gets "[]".
func (a *grouper) WindowValue(*sqlite.FunctionContext) (driver.Value, error) {
	if a.err != nil {
		return nil, a.err
	}
	if a.g == nil {
		return "", nil
	}
	return a.g.Result()
}

func (a *grouper) Final(*sqlite.FunctionContext) {}
