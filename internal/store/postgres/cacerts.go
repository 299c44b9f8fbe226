package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certauth"
)

var _ certauth.Store = (*DB)(nil)

const caColumns = `name, certificate, thumbprint, verified, verification_code, created_time, updated_time, etag`

func scanCA(row pgx.Row) (certauth.CA, error) {
	var (
		ca               certauth.CA
		code             *string
		created, updated string
	)
	if err := row.Scan(&ca.Name, &ca.PEM, &ca.Thumbprint, &ca.Verified, &code, &created, &updated, &ca.ETag); err != nil {
		return certauth.CA{}, err
	}
	if code != nil {
		ca.VerificationCode = *code
	}
	ca.Created, ca.Updated = parseTime(created).Time, parseTime(updated).Time
	return ca, nil
}

func caNotFound(name string) error {
	return herd.Errorf(herd.ErrNotFound, "no CA certificate named %q", name)
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// CACertificates returns every CA certificate in name order.
func (db *DB) CACertificates(ctx context.Context) ([]certauth.CA, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+caColumns+` FROM ca_certificates ORDER BY name`)
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
	ca, err := scanCA(db.pool.QueryRow(ctx, `SELECT `+caColumns+` FROM ca_certificates WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
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
	tag, err := db.pool.Exec(ctx, `INSERT INTO ca_certificates (`+caColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (name) DO NOTHING`,
		ca.Name, ca.PEM, ca.Thumbprint, ca.Verified, nullable(ca.VerificationCode),
		herd.NewTime(ca.Created).String(), herd.NewTime(ca.Updated).String(), ca.ETag)
	if err != nil {
		return certauth.CA{}, fmt.Errorf("create CA certificate %q: %w", ca.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return certauth.CA{}, herd.Errorf(herd.ErrPreconditionFailed, "a CA certificate named %q exists", ca.Name)
	}
	return ca, nil
}

// UpdateCACertificate changes a CA certificate in one transaction, under
// a row lock.
func (db *DB) UpdateCACertificate(ctx context.Context, name string, change func(*certauth.CA) error) (certauth.CA, error) {
	var out certauth.CA
	err := db.tx(ctx, func(tx pgx.Tx) error {
		ca, err := scanCA(tx.QueryRow(ctx, `SELECT `+caColumns+` FROM ca_certificates WHERE name = $1 FOR UPDATE`, name))
		if errors.Is(err, pgx.ErrNoRows) {
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
		_, err = tx.Exec(ctx, `UPDATE ca_certificates SET certificate = $1, thumbprint = $2, verified = $3,
			verification_code = $4, created_time = $5, updated_time = $6, etag = $7 WHERE name = $8`,
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
	err := db.tx(ctx, func(tx pgx.Tx) error {
		ca, err := scanCA(tx.QueryRow(ctx, `SELECT `+caColumns+` FROM ca_certificates WHERE name = $1 FOR UPDATE`, name))
		if errors.Is(err, pgx.ErrNoRows) {
			return caNotFound(name)
		}
		if err != nil {
			return err
		}
		if err := check(ca); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM ca_certificates WHERE name = $1`, name)
		return err
	})
	if err != nil && herd.ErrorCodeOf(err) == herd.ErrInternal {
		return fmt.Errorf("delete CA certificate %q: %w", name, err)
	}
	return err
}
