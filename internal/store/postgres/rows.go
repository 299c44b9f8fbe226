package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd/internal/store/rows"
)

// CountRows returns how many rows t holds (rows.Source).
func (db *DB) CountRows(ctx context.Context, t *rows.Table) (int64, error) {
	var n int64
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM `+t.Name).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", t.Name, err)
	}
	return n, nil
}

// ExportRows calls fn with every row of t in primary-key order, from one
// snapshot (rows.Source). JSON columns come out as jsonb's text.
func (db *DB) ExportRows(ctx context.Context, t *rows.Table, fn func([]any) error) error {
	sel := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		switch c.Kind {
		case rows.JSON:
			sel[i] = c.Name + "::text"
		case rows.Int:
			sel[i] = c.Name + "::int8"
		default:
			sel[i] = c.Name
		}
	}
	rs, err := db.pool.Query(ctx, `SELECT `+strings.Join(sel, ", ")+` FROM `+t.Name+
		` ORDER BY `+strings.Join(t.Key, ", "))
	if err != nil {
		return fmt.Errorf("export %s: %w", t.Name, err)
	}
	defer rs.Close()
	row := make([]any, len(t.Columns))
	for rs.Next() {
		vals, err := rs.Values()
		if err != nil {
			return fmt.Errorf("export %s: %w", t.Name, err)
		}
		copy(row, vals)
		if err := fn(row); err != nil {
			return err
		}
	}
	if err := rs.Err(); err != nil {
		return fmt.Errorf("export %s: %w", t.Name, err)
	}
	return nil
}

// LoadRows loads rows in one transaction with COPY (rows.Sink), and
// refreshes the planner's statistics of the tables it filled.
func (db *DB) LoadRows(ctx context.Context, replace bool, fill func(put func(*rows.Table, [][]any) error) error) error {
	filled := map[string]bool{}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if replace {
			names := make([]string, len(rows.Tables))
			for i, t := range rows.Tables {
				names[i] = t.Name
			}
			if _, err := tx.Exec(ctx, `TRUNCATE `+strings.Join(names, ", ")); err != nil {
				return fmt.Errorf("empty the tables: %w", err)
			}
		} else if err := checkEmpty(ctx, tx); err != nil {
			return err
		}
		return fill(func(t *rows.Table, batch [][]any) error {
			filled[t.Name] = true
			if t.Name == "settings" {
				for _, r := range batch {
					if _, err := tx.Exec(ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)
						ON CONFLICT (name) DO UPDATE SET value = excluded.value`, r...); err != nil {
						return fmt.Errorf("load settings: %w", err)
					}
				}
				return nil
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{t.Name}, t.Names(), pgx.CopyFromRows(batch)); err != nil {
				return fmt.Errorf("load %s: %w", t.Name, err)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, t := range rows.Tables {
		if filled[t.Name] {
			if _, err := db.pool.Exec(ctx, `ANALYZE `+t.Name); err != nil {
				return fmt.Errorf("analyze %s: %w", t.Name, err)
			}
		}
	}
	return nil
}

// checkEmpty fails with rows.ErrNotEmpty when any table but settings holds
// a row.
func checkEmpty(ctx context.Context, tx pgx.Tx) error {
	for _, t := range rows.Tables {
		if t.Name == "settings" {
			continue
		}
		var found bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.Name+`)`).Scan(&found); err != nil {
			return fmt.Errorf("check %s: %w", t.Name, err)
		}
		if found {
			return fmt.Errorf("%w: it holds %s", rows.ErrNotEmpty, t.Name)
		}
	}
	return nil
}
