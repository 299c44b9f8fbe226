package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/herd-iot/herd/internal/store/rows"
)

// jsonbColumns are the JSON columns kept as SQLite's binary JSONB (the
// twin sections, migrations 0010 and 0030); other JSON columns are text.
var jsonbColumns = map[string]bool{
	"tags": true, "desired": true, "reported": true,
	"desired_metadata": true, "reported_metadata": true,
}

// CountRows returns how many rows t holds (rows.Source).
func (db *DB) CountRows(ctx context.Context, t *rows.Table) (int64, error) {
	var n int64
	if err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM `+t.Name).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", t.Name, err)
	}
	return n, nil
}

// ExportRows calls fn with every row of t in primary-key order, from one
// read transaction (rows.Source).
func (db *DB) ExportRows(ctx context.Context, t *rows.Table, fn func([]any) error) error {
	sel := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		sel[i] = c.Name
		if c.Kind == rows.JSON {
			sel[i] = "json(" + c.Name + ")"
		}
	}
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("export %s: %w", t.Name, err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	rs, err := tx.QueryContext(ctx, `SELECT `+strings.Join(sel, ", ")+` FROM `+t.Name+
		` ORDER BY `+strings.Join(t.Key, ", "))
	if err != nil {
		return fmt.Errorf("export %s: %w", t.Name, err)
	}
	defer rs.Close()
	row := make([]any, len(t.Columns))
	ptrs := make([]any, len(t.Columns))
	for i := range row {
		ptrs[i] = &row[i]
	}
	for rs.Next() {
		if err := rs.Scan(ptrs...); err != nil {
			return fmt.Errorf("export %s: %w", t.Name, err)
		}
		for i, c := range t.Columns {
			if row[i], err = neutral(c, row[i]); err != nil {
				return fmt.Errorf("export %s: %w", t.Name, err)
			}
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	if err := rs.Err(); err != nil {
		return fmt.Errorf("export %s: %w", t.Name, err)
	}
	return nil
}

// neutral converts a value as the driver scanned it into the rows form.
func neutral(c rows.Column, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch c.Kind {
	case rows.Int, rows.Bool:
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("column %s: %T, want an integer", c.Name, v)
		}
		if c.Kind == rows.Bool {
			return n != 0, nil
		}
		return n, nil
	default:
		switch s := v.(type) {
		case string:
			return s, nil
		case []byte:
			return string(s), nil
		}
		return nil, fmt.Errorf("column %s: %T, want text", c.Name, v)
	}
}

// LoadRows loads rows in one write transaction (rows.Sink).
func (db *DB) LoadRows(ctx context.Context, replace bool, fill func(put func(*rows.Table, [][]any) error) error) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if replace {
			for i := len(rows.Tables) - 1; i >= 0; i-- {
				if _, err := tx.ExecContext(ctx, `DELETE FROM `+rows.Tables[i].Name); err != nil {
					return fmt.Errorf("empty %s: %w", rows.Tables[i].Name, err)
				}
			}
		} else if err := checkEmpty(ctx, tx); err != nil {
			return err
		}
		stmts := map[*rows.Table]*sql.Stmt{}
		defer func() {
			for _, s := range stmts {
				s.Close()
			}
		}()
		return fill(func(t *rows.Table, batch [][]any) error {
			st := stmts[t]
			if st == nil {
				var err error
				if st, err = tx.PrepareContext(ctx, insertRow(t)); err != nil {
					return fmt.Errorf("load %s: %w", t.Name, err)
				}
				stmts[t] = st
			}
			for _, row := range batch {
				if _, err := st.ExecContext(ctx, row...); err != nil {
					return fmt.Errorf("load %s: %w", t.Name, err)
				}
			}
			return nil
		})
	})
}

// checkEmpty fails with rows.ErrNotEmpty when any table but settings holds
// a row.
func checkEmpty(ctx context.Context, tx *sql.Tx) error {
	for _, t := range rows.Tables {
		if t.Name == "settings" {
			continue
		}
		var found bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.Name+`)`).Scan(&found); err != nil {
			return fmt.Errorf("check %s: %w", t.Name, err)
		}
		if found {
			return fmt.Errorf("%w: it holds %s", rows.ErrNotEmpty, t.Name)
		}
	}
	return nil
}

// insertRow is the INSERT of one row of t; settings overwrite what is
// there.
func insertRow(t *rows.Table) string {
	vals := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		vals[i] = "?"
		if jsonbColumns[c.Name] {
			vals[i] = "jsonb(?)"
		}
	}
	verb := "INSERT"
	if t.Name == "settings" {
		verb = "INSERT OR REPLACE"
	}
	return verb + ` INTO ` + t.Name + ` (` + strings.Join(t.Names(), ", ") + `) VALUES (` + strings.Join(vals, ", ") + `)`
}
