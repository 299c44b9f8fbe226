package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/twin"
)

var _ query.Store = (*DB)(nil)

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
		var pe *pgconn.PgError
		if asPgError(err, &pe) && strings.HasPrefix(pe.Code, "22") {
			// A data exception of the query's own arithmetic (a float
			// overflow): the query, not the store, is at fault.
			return nil, nil, herd.Errorf(herd.ErrArgumentInvalid, "the query cannot be computed: %s", pe.Message)
		}
		return nil, nil, fmt.Errorf("run query %q: %w", q, err)
	}
	return items, next, nil
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

// moduleTwins returns module twins (SELECT * FROM devices.modules) or
// projection rows, a page in (device, module) order after the cursor.
func (db *DB) moduleTwins(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	cond, p, err := condition(q)
	if err != nil {
		return nil, nil, err
	}
	keys, err := cursorKeys(cur, 2)
	if err != nil {
		return nil, nil, err
	}
	text := `SELECT ` + moduleColumns + `, ` + twinColumns + ` FROM modules WHERE (` + cond.Text + `) AND (device_id, module_id) > (` +
		p.add(keys[0]) + `, ` + p.add(keys[1]) + `) ORDER BY device_id, module_id LIMIT ` + p.add(size+1)
	rows, err := db.pool.Query(ctx, text, p.args...)
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

// twins returns twins (SELECT *) or projection rows, a page in device id
// order after the cursor.
func (db *DB) twins(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	cond, p, err := condition(q)
	if err != nil {
		return nil, nil, err
	}
	keys, err := cursorKeys(cur, 1)
	if err != nil {
		return nil, nil, err
	}
	text := `SELECT ` + identityColumns + `, ` + twinColumns + ` FROM devices WHERE (` + cond.Text + `) AND device_id > ` +
		p.add(keys[0]) + ` ORDER BY device_id LIMIT ` + p.add(size+1)
	rows, err := db.pool.Query(ctx, text, p.args...)
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

func (db *DB) deviceJobs(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	cond, p, err := condition(q)
	if err != nil {
		return nil, nil, err
	}
	keys, err := cursorKeys(cur, 2)
	if err != nil {
		return nil, nil, err
	}
	text := `SELECT ` + deviceJobColumns + ` FROM device_jobs WHERE (` + cond.Text + `) AND (job_id, device_id) > (` +
		p.add(keys[0]) + `, ` + p.add(keys[1]) + `) ORDER BY job_id, device_id LIMIT ` + p.add(size+1)
	rows, err := db.pool.Query(ctx, text, p.args...)
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

// aggregate runs an aggregation (one GROUP BY statement) and returns the
// page of its rows after the cursor's offset.
func (db *DB) aggregate(ctx context.Context, q *query.Query, size int, cur *query.Cursor) ([]any, *query.Cursor, error) {
	a, err := query.CompileAggregate(query.Postgres, q)
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
	rows, err := db.pool.Query(ctx, a.SQL.Text, a.SQL.Args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
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
		vals, err := rows.Values()
		if err != nil {
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
