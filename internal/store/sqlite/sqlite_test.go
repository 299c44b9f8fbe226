package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/herd-iot/herd/internal/store/sqlite"
	"github.com/herd-iot/herd/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store { return openDB(t) })
}

func openDB(t testing.TB) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herd.db")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SetSetting(ctx, "hostname", "h1"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = sqlite.Open(ctx, path) // migrations already applied: a no-op
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, err := db.Setting(ctx, "hostname"); err != nil || v != "h1" {
		t.Errorf("setting after reopen = %q, %v", v, err)
	}
	if v, err := db.Setting(ctx, "missing"); err != nil || v != "" {
		t.Errorf("missing setting = %q, %v", v, err)
	}
}
