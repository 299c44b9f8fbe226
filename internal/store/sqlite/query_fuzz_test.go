package sqlite_test

import (
	"bufio"
	"math/rand"
	"os"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
)

// FuzzQuerySQL runs every query that parses against real SQLite: the
// compiled SQL must run without error and select what the reference
// evaluator selects. The seed corpus is the query package's golden
// queries.
func FuzzQuerySQL(f *testing.F) {
	file, err := os.Open("../../query/testdata/valid.txt")
	if err != nil {
		f.Fatal(err)
	}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			f.Add(line)
		}
	}
	file.Close()
	db := openDB(f)
	docs := loadTwins(f, db, rand.New(rand.NewSource(7)), 60)
	f.Fuzz(func(t *testing.T, text string) {
		q, err := query.Parse(text)
		if err != nil {
			return
		}
		items, err := runAll(t, db, q, 7)
		if err != nil {
			if herd.ErrorCodeOf(err) == herd.ErrInternal {
				t.Fatalf("%s: %v", q, err)
			}
			return
		}
		if q.Aggregated() {
			var matched []map[string]any
			for _, d := range docs {
				if q.Match(d) {
					matched = append(matched, d)
				}
			}
			want := q.Aggregate(matched)
			if q.HasTop && int64(len(want)) > q.Top {
				return // which groups TOP keeps is the store's order
			}
			var got []map[string]any
			for _, it := range items {
				got = append(got, it.(map[string]any))
			}
			if msg := sameRows(want, got); msg != "" {
				t.Fatalf("%s\n%s", q, msg)
			}
			return
		}
		if q.From != query.Devices {
			return
		}
		n := 0
		for _, d := range docs {
			if q.Match(d) {
				n++
			}
		}
		if q.HasTop {
			n = min(n, int(q.Top))
		}
		if len(items) != n {
			t.Fatalf("%s: SQL returned %d items, the evaluator %d", q, len(items), n)
		}
	})
}
