package sqlite

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/herd-iot/herd/internal/store/rows"
)

// Every column of every table of the hub's data is in rows.Tables, so that
// `herd store copy` and the export miss none (a migration that adds a
// column must add it there too).
func TestRowsTablesMatchSchema(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tb := range rows.Tables {
		r, err := db.read.QueryContext(ctx, `SELECT * FROM `+tb.Name+` LIMIT 0`)
		if err != nil {
			t.Fatal(err)
		}
		cols, err := r.Columns()
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(cols)
		want := slices.Sorted(slices.Values(tb.Names()))
		if !slices.Equal(cols, want) {
			t.Errorf("table %s has columns %v; rows.Tables lists %v", tb.Name, cols, want)
		}
	}
}
