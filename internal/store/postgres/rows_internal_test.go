package postgres

import (
	"context"
	"slices"
	"testing"

	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/internal/store/rows"
)

// Every column of every table of the hub's data is in rows.Tables, so that
// `herd store copy` misses none (a migration that adds a column must add
// it there too).
func TestRowsTablesMatchSchema(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tb := range rows.Tables {
		r, err := db.pool.Query(ctx, `SELECT * FROM `+tb.Name+` LIMIT 0`)
		if err != nil {
			t.Fatal(err)
		}
		var cols []string
		for _, f := range r.FieldDescriptions() {
			cols = append(cols, f.Name)
		}
		r.Close()
		slices.Sort(cols)
		want := slices.Sorted(slices.Values(tb.Names()))
		if !slices.Equal(cols, want) {
			t.Errorf("table %s has columns %v; rows.Tables lists %v", tb.Name, cols, want)
		}
	}
}
