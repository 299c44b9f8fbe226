package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certauth"
)

var _ certauth.Store = (*DB)(nil)

const caColumns = `name, certificate, thumbprint, verified, verification_code, created_time, updated_time, etag`

func scanCA(row scanner) (certauth.CA, error) {
	var (
		ca               certauth.CA
		code             sql.NullString
		created, updated string
	)
	if err := row.Scan(&ca.Name, &ca.PEM, &ca.Thumbprint, &ca.Verified, &code, &created, &updated, &ca.ETag); err != nil {
		return certauth.CA{}, err
	}
	ca.VerificationCode = code.String
	ca.Created, ca.Updated = parseTime(created).Time, parseTime(updated).Time
	return ca, nil
}

func caNotFound(name string) error {
	return herd.Errorf(herd.ErrNotFound, "no CA certificate named %q", name)
}

func nullable(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// CACertificates returns every CA certificate in name order.
func (db *DB) CACertificates(ctx context.Context) ([]certauth.CA, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+caColumns+` FROM ca_certificates ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list CA certificates: %w", err)
	}
	defer rows.Close()
	out := []certauth.CA{}
	for rows.Next() {
		ca, err := scanCA(rows)
		if err != nil {
			return nil, fmt.Errorf("list CA certificates: %w", err)
		}
		out = append(out, ca)
	}
	return out, rows.Err()
}

// CACertificate returns one CA certificate.
func (db *DB) CACertificate(ctx context.Context, name string) (certauth.CA, error) {
	ca, err := scanCA(db.read.QueryRowContext(ctx, `SELECT `+caColumns+` FROM ca_certificates WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return certauth.CA{}, caNotFound(name)
	}
	if err != nil {
		return certauth.CA{}, fmt.Errorf("get CA certificate %q: %w", name, err)
	}
	return ca, nil
}

// CreateCACertificate stores a new CA certificate with etag 1.
func (db *DB) CreateCACertificate(ctx context.Context, ca certauth.CA) (certauth.CA, error) {
	ca.ETag = 1
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO ca_certificates (`+caColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO NOTHING`,
			ca.Name, ca.PEM, ca.Thumbprint, ca.Verified, nullable(ca.VerificationCode),
			herd.NewTime(ca.Created).String(), herd.NewTime(ca.Updated).String(), ca.ETag)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return herd.Errorf(herd.ErrPreconditionFailed, "a CA certificate named %q exists", ca.Name)
		}
		return nil
	})
	if err != nil {
		if herd.ErrorCodeOf(err) != herd.ErrInternal {
			return certauth.CA{}, err
		}
		return certauth.CA{}, fmt.Errorf("create CA certificate %q: %w", ca.Name, err)
	}
	return ca, nil
}

// UpdateCACertificate changes a CA certificate in one transaction.
func (db *DB) UpdateCACertificate(ctx context.Context, name string, change func(*certauth.CA) error) (certauth.CA, error) {
	var out certauth.CA
	err := db.tx(ctx, func(tx *sql.Tx) error {
		ca, err := scanCA(tx.QueryRowContext(ctx, `SELECT `+caColumns+` FROM ca_certificates WHERE name = ?`, name))
		if errors.Is(err, sql.ErrNoRows) {
			return caNotFound(name)
		}
		if err != nil {
			return err
		}
		if err := change(&ca); err != nil {
			return err
		}
		ca.Name = name
		ca.ETag++
		_, err = tx.ExecContext(ctx, `UPDATE ca_certificates SET certificate = ?, thumbprint = ?, verified = ?,
			verification_code = ?, created_time = ?, updated_time = ?, etag = ? WHERE name = ?`,
			ca.PEM, ca.Thumbprint, ca.Verified, nullable(ca.VerificationCode),
			herd.NewTime(ca.Created).String(), herd.NewTime(ca.Updated).String(), ca.ETag, name)
		out = ca
		return err
	})
	if err != nil {
		if herd.ErrorCodeOf(err) != herd.ErrInternal {
			return certauth.CA{}, err
		}
		return certauth.CA{}, fmt.Errorf("update CA certificate %q: %w", name, err)
	}
	return out, nil
}

// DeleteCACertificate removes a CA certificate if check allows it.
func (db *DB) DeleteCACertificate(ctx context.Context, name string, check func(certauth.CA) error) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		ca, err := scanCA(tx.QueryRowContext(ctx, `SELECT `+caColumns+` FROM ca_certificates WHERE name = ?`, name))
		if errors.Is(err, sql.ErrNoRows) {
			return caNotFound(name)
		}
		if err != nil {
			return err
		}
		if err := check(ca); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM ca_certificates WHERE name = ?`, name)
		return err
	})
	if err != nil && herd.ErrorCodeOf(err) == herd.ErrInternal {
		return fmt.Errorf("delete CA certificate %q: %w", name, err)
	}
	return err
}
