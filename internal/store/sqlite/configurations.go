package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/config"
)

var _ config.Store = (*DB)(nil)

const configColumns = `id, body, created_time, updated_time, etag`

func scanConfig(row scanner) (config.Record, error) {
	var (
		r                      config.Record
		body, created, updated string
	)
	if err := row.Scan(&r.ID, &body, &created, &updated, &r.ETag); err != nil {
		return config.Record{}, err
	}
	r.Body = []byte(body)
	r.Created, r.Updated = parseTime(created).Time, parseTime(updated).Time
	return r, nil
}

func configNotFound(id string) error {
	return herd.Errorf(herd.ErrConfigurationNotFound, "configuration %q does not exist", id)
}

// Configurations returns every configuration in id order.
func (db *DB) Configurations(ctx context.Context) ([]config.Record, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+configColumns+` FROM configurations ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list configurations: %w", err)
	}
	defer rows.Close()
	out := []config.Record{}
	for rows.Next() {
		r, err := scanConfig(rows)
		if err != nil {
			return nil, fmt.Errorf("list configurations: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Configuration returns one configuration.
func (db *DB) Configuration(ctx context.Context, id string) (config.Record, error) {
	r, err := scanConfig(db.read.QueryRowContext(ctx, `SELECT `+configColumns+` FROM configurations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return config.Record{}, configNotFound(id)
	}
	if err != nil {
		return config.Record{}, fmt.Errorf("get configuration %q: %w", id, err)
	}
	return r, nil
}

// CreateConfiguration stores a new configuration with etag 1.
func (db *DB) CreateConfiguration(ctx context.Context, r config.Record, max int) (config.Record, error) {
	r.ETag = 1
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM configurations`).Scan(&n); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO configurations (`+configColumns+`) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO NOTHING`, r.ID, string(r.Body), stamp(r.Created), stamp(r.Updated), r.ETag)
		if err != nil {
			return err
		}
		if added, err := res.RowsAffected(); err != nil {
			return err
		} else if added == 0 {
			return herd.Errorf(herd.ErrConfigurationAlreadyExists, "configuration %q exists: update it with If-Match", r.ID)
		}
		if n >= max {
			return herd.Errorf(herd.ErrTooManyConfigurations, "the hub holds %d configurations, its limit", max)
		}
		return nil
	})
	if err != nil {
		if herd.ErrorCodeOf(err) != herd.ErrInternal {
			return config.Record{}, err
		}
		return config.Record{}, fmt.Errorf("create configuration %q: %w", r.ID, err)
	}
	return r, nil
}

// UpdateConfiguration changes a configuration in one transaction.
func (db *DB) UpdateConfiguration(ctx context.Context, id string, change func(*config.Record) error) (config.Record, error) {
	var out config.Record
	err := db.tx(ctx, func(tx *sql.Tx) error {
		r, err := scanConfig(tx.QueryRowContext(ctx, `SELECT `+configColumns+` FROM configurations WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return configNotFound(id)
		}
		if err != nil {
			return err
		}
		if err := change(&r); err != nil {
			return err
		}
		r.ID = id
		r.ETag++
		_, err = tx.ExecContext(ctx, `UPDATE configurations SET body = ?, created_time = ?, updated_time = ?, etag = ? WHERE id = ?`,
			string(r.Body), stamp(r.Created), stamp(r.Updated), r.ETag, id)
		out = r
		return err
	})
	if err != nil {
		if herd.ErrorCodeOf(err) != herd.ErrInternal {
			return config.Record{}, err
		}
		return config.Record{}, fmt.Errorf("update configuration %q: %w", id, err)
	}
	return out, nil
}

// DeleteConfiguration removes a configuration if check allows it.
func (db *DB) DeleteConfiguration(ctx context.Context, id string, check func(config.Record) error) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		r, err := scanConfig(tx.QueryRowContext(ctx, `SELECT `+configColumns+` FROM configurations WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return configNotFound(id)
		}
		if err != nil {
			return err
		}
		if err := check(r); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM configurations WHERE id = ?`, id)
		return err
	})
	if err != nil && herd.ErrorCodeOf(err) == herd.ErrInternal {
		return fmt.Errorf("delete configuration %q: %w", id, err)
	}
	return err
}
