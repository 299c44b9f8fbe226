package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-iot/herd/internal/store/sqlite"
	"github.com/herd-iot/herd/internal/twin"
)

// pragmas reads a database file's page size and journal mode.
func pragmas(t *testing.T, path string) (pageSize int, journal string) {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.QueryRow(`PRAGMA page_size`).Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRow(`PRAGMA journal_mode`).Scan(&journal); err != nil {
		t.Fatal(err)
	}
	return pageSize, journal
}

// A new database gets the store's page size and WAL mode; one created with
// SQLite's default page size keeps it and works as before.
func TestPageSize(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		old  bool
		want int
	}{
		{"new", false, sqlite.PageSize},
		{"created with 4 KB pages", true, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "herd.db")
			if tc.old {
				raw, err := sql.Open("sqlite", "file:"+path)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := raw.Exec(`PRAGMA page_size = 4096; CREATE TABLE schema_migrations (
					version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`); err != nil {
					t.Fatal(err)
				}
				raw.Close()
			}
			db, err := sqlite.Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			createDevices(t, db, "p", 50, func() *twin.Doc { return twin.NewDoc(at) })
			if got := twinJSON(t, db, "p-00049"); got == "" {
				t.Fatal("no twin")
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if size, journal := pragmas(t, path); size != tc.want || journal != "wal" {
				t.Errorf("page size %d, journal mode %q; want %d, wal", size, journal, tc.want)
			}
		})
	}
}

// TestNewerSchemaRefused: a database that a newer herd migrated (a
// migration this herd does not have) is not opened, and is left as it is.
func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herd.db")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (99999, '99999_from_the_future.sql', '2030-01-01T00:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	db, err = sqlite.Open(ctx, path)
	if err == nil {
		db.Close()
		t.Fatal("a database with a migration this herd does not know was opened")
	}
	if !errors.Is(err, sqlite.ErrNewerSchema) || !strings.Contains(err.Error(), "99999") {
		t.Fatalf("error %q; want ErrNewerSchema naming migration 99999", err)
	}
}
