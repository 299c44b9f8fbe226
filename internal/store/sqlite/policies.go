package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/herd-iot/herd/internal/auth"
)

var _ auth.Store = (*DB)(nil)

// Policies returns the hub's shared access policies.
func (db *DB) Policies(ctx context.Context) ([]auth.Policy, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT name, primary_key, secondary_key, rights FROM policies ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	defer rows.Close()
	var out []auth.Policy
	for rows.Next() {
		var p auth.Policy
		if err := rows.Scan(&p.Name, &p.PrimaryKey, &p.SecondaryKey, &p.Rights); err != nil {
			return nil, fmt.Errorf("list policies: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// CreatePolicies stores new policies.
func (db *DB) CreatePolicies(ctx context.Context, ps []auth.Policy) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		for _, p := range ps {
			if _, err := tx.ExecContext(ctx, `INSERT INTO policies (name, primary_key, secondary_key, rights) VALUES (?, ?, ?, ?)`,
				p.Name, p.PrimaryKey, p.SecondaryKey, p.Rights); err != nil {
				return fmt.Errorf("create policy %q: %w", p.Name, err)
			}
		}
		return nil
	})
}
