package sqlite_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/store/sqlite"
)

// Query benchmarks over 1,000,000 twins in the embedded store (figures in
// docs/benchmarks.md). Run them alone, serialized with other benchmarks:
//
//	flock /tmp/herd-bench.lock go test ./internal/store/sqlite -run '^$' -bench Query1M -benchtime 5x
//
// HERD_BENCH_DIR keeps the generated database between runs.

// queryFleet returns a database of n twins of the query shape
// (fleetdb.Query: tags building 0–999, floor and owner; desired fwTarget
// and interval; reported fw "1.2" on 10% of devices, missing on 5%, else
// "1.1", temperature, battery and a nested connectivity object, with the
// $metadata trees twin writes produce), built once per n.
func queryFleet(b *testing.B, n int) *sqlite.DB {
	b.Helper()
	dir := os.Getenv("HERD_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	start := time.Now()
	path, built, err := fleetdb.Path(context.Background(), dir, fleetdb.Query, n)
	if err != nil {
		b.Fatal(err)
	}
	if built {
		b.Logf("built %d twins in %s", n, time.Since(start).Round(time.Millisecond))
	}
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkQuery1M times queries over 1,000,000 twins through the query
// service (parse, compile, SQL, building the page), as POST /devices/query
// runs them. "page" is the first page of 100; "all" follows every page;
// "count" evaluates the condition on every twin.
func BenchmarkQuery1M(b *testing.B) {
	db := queryFleet(b, 1_000_000)
	svc := query.NewService(db)
	ctx := context.Background()
	for _, bc := range fleetdb.Queries {
		b.Run(bc.Name, func(b *testing.B) {
			items := 0
			for b.Loop() {
				items = 0
				token := ""
				for {
					res, err := svc.Run(ctx, bc.Text, 100, token)
					if err != nil {
						b.Fatal(err)
					}
					items += len(res.Items)
					token = res.Continuation
					if !bc.All || token == "" {
						break
					}
				}
			}
			b.ReportMetric(float64(items), "items")
		})
	}
}
