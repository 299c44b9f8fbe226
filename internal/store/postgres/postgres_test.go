package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/internal/store/postgres"
	"github.com/herd-iot/herd/internal/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func openDB(t testing.TB) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store { return openDB(t) })
}

// FuzzQuerySQL runs the conformance suite's query fuzzer on PostgreSQL.
func FuzzQuerySQL(f *testing.F) { storetest.QueryFuzzer(f, openDB(f)) }

// TestOpenErrors: a start that cannot work fails at once with a message
// that says which problem it is, and never shows the password.
func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	srv, err := pgtest.Shared()
	if err != nil {
		pgtest.Unavailable(t, err)
	}
	good := pgtest.URL(t)
	admin, err := pgx.Connect(ctx, srv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// A role that may log in but not create anything in a database it does
	// not own (PostgreSQL 15 grants no CREATE on public to everyone).
	if _, err := admin.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'herd_limited') THEN CREATE ROLE herd_limited LOGIN; END IF;
		END $$`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `REVOKE CREATE ON SCHEMA public FROM PUBLIC`); err != nil {
		t.Fatal(err)
	}
	withUser := func(raw, user, db string) string {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(user, "hunter2")
		if db != "" {
			u.Path = "/" + db
		}
		return u.String()
	}
	limited := pgtest.URL(t)
	au, err := url.Parse(srv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	superuser := au.User.Username()
	for _, c := range []struct {
		name, url, want string
	}{
		{"bad URL", "postgres://herd:hunter2@db:notaport/herd", "not a PostgreSQL URL"},
		{"unreachable", "postgres://herd:hunter2@127.0.0.1:1/herd?sslmode=disable&connect_timeout=5", "cannot reach PostgreSQL"},
		{"unknown role", withUser(good, "nobody_here", ""), "PostgreSQL refused the login"},
		{"no database", withUser(good, superuser, "no_such_db_here"), "PostgreSQL has no such database"},
		{"no rights", withUser(limited, "herd_limited", ""), "lacks the rights Herd needs"},
	} {
		db, err := postgres.Open(ctx, c.url)
		if err == nil {
			db.Close()
			t.Errorf("%s: Open succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v; want %q and no password", c.name, err, c.want)
		}
	}
}

// TestConcurrentOpen: hubs that start at once on a new database migrate
// it once, under the advisory lock, and all open it.
func TestConcurrentOpen(t *testing.T) {
	u := pgtest.URL(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			db, err := postgres.Open(context.Background(), u)
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestClaim: one hub at a time serves a database; the claim goes with the
// store's Close.
func TestClaim(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	a, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Claim(ctx); err == nil || !strings.Contains(err.Error(), "another hub is serving database") {
		t.Errorf("second claim: %v", err)
	}
	a.Close()
	if err := b.Claim(ctx); err != nil {
		t.Errorf("claim after the first hub closed: %v", err)
	}
}

// TestJoinExcludesClaim: nodes of a cluster share a database with each
// other, not with a hub that serves it alone; one node at a time leads.
func TestJoinExcludesClaim(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	open := func() *postgres.DB {
		t.Helper()
		db, err := postgres.Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	n1, n2, alone := open(), open(), open()
	if err := n1.Join(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := n2.Join(ctx, "n2"); err != nil {
		t.Fatalf("a second node: %v", err)
	}
	if err := alone.Claim(ctx); err == nil || !strings.Contains(err.Error(), "another hub is serving database") {
		t.Errorf("a hub alone beside nodes: %v", err)
	}
	if _, err := n1.Lead(ctx, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := n2.Lead(short, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a second leader: %v", err)
	}
	n1.Close() // its session ends: n2 leads
	if _, err := n2.Lead(ctx, 50*time.Millisecond); err != nil {
		t.Errorf("lead after the leader closed: %v", err)
	}
	n2.Close()
	if err := alone.Claim(ctx); err != nil {
		t.Errorf("claim once the nodes closed: %v", err)
	}
	if err := open().Join(ctx, "n3"); err == nil || !strings.Contains(err.Error(), "serves database") {
		t.Errorf("a node beside a hub alone: %v", err)
	}
}

// TestNewerSchemaRefused: a database that a newer herd migrated (a
// migration this herd does not have: in a cluster, a node of an older
// version started after a newer one) is not opened.
func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	db, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	if _, err := raw.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES (99999, '99999_from_the_future.sql')`); err != nil {
		t.Fatal(err)
	}
	db, err = postgres.Open(ctx, u)
	if err == nil {
		db.Close()
		t.Fatal("a database with a migration this herd does not know was opened")
	}
	if !errors.Is(err, postgres.ErrNewerSchema) || !strings.Contains(err.Error(), "99999") {
		t.Fatalf("error %q; want ErrNewerSchema naming migration 99999", err)
	}
}
