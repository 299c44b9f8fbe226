// Package store opens the store that a --store value names: the embedded
// SQLite database (the default, a file in the data folder) or a
// PostgreSQL database. It is how cmd/herd, the test hubs and the
// benchmarks pick a store; the hub itself only sees the hub.Store
// interface.
package store

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/store/sqlite"
)

// SQLiteFile is the database file in a data folder.
const SQLiteFile = "herd.db"

// Kind says which implementation a store value names.
type Kind string

// Store kinds.
const (
	SQLite   Kind = "sqlite"
	Postgres Kind = "postgres"
)

// Parse reads a --store value: "" (SQLite in dataDir), "sqlite:PATH", or a
// postgres:// (postgresql://) URL. It returns the kind and the location:
// the database file or the URL.
func Parse(spec, dataDir string) (Kind, string, error) {
	switch {
	case spec == "":
		return SQLite, filepath.Join(dataDir, SQLiteFile), nil
	case strings.HasPrefix(spec, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(spec, "sqlite:"), "//")
		if path == "" {
			return "", "", fmt.Errorf("--store %q: give the database file, as in sqlite:herd-data/herd.db", spec)
		}
		return SQLite, path, nil
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		return Postgres, spec, nil
	}
	return "", "", fmt.Errorf("--store %q: use sqlite:PATH or a postgres://user@host:5432/db URL", Redact(spec))
}

// Open opens (creating and migrating it if needed) the store that spec
// names.
func Open(ctx context.Context, spec, dataDir string) (hub.Store, error) {
	kind, where, err := Parse(spec, dataDir)
	if err != nil {
		return nil, err
	}
	switch kind {
	case Postgres:
		return openPostgres(ctx, where)
	}
	if dir := filepath.Dir(where); dir != "" {
		if err := mkdir(dir); err != nil {
			return nil, err
		}
	}
	db, err := sqlite.Open(ctx, where)
	if err != nil {
		return nil, err
	}
	return db, nil
}

// Redact hides the password of a URL for messages and logs: in the
// user information (postgres://herd:***@db/herd) and in a password query
// parameter (?password=***).
func Redact(spec string) string {
	u, err := url.Parse(spec)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		if scheme, rest, ok := strings.Cut(spec, "://"); ok {
			if userinfo, host, ok := strings.Cut(rest, "@"); ok {
				if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
					return scheme + "://" + user + ":***@" + host
				}
			}
		}
		return spec
	}
	if _, hasPass := u.User.Password(); hasPass {
		u.User = url.UserPassword(u.User.Username(), "***")
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "***")
		u.RawQuery = q.Encode()
	}
	return strings.ReplaceAll(u.String(), "%2A%2A%2A", "***")
}

// Describe says in a few words which store spec names, for the hub's
// banner and logs: "SQLite herd-data/herd.db" or "PostgreSQL
// postgres://herd:***@db:5432/herd".
func Describe(spec, dataDir string) string {
	kind, where, err := Parse(spec, dataDir)
	if err != nil {
		return Redact(spec)
	}
	if kind == Postgres {
		return "PostgreSQL " + Redact(where)
	}
	return "SQLite " + where
}
