package postgres_test

import (
	"context"
	"testing"

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
