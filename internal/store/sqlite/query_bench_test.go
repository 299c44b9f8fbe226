package sqlite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/sqlite"
	"github.com/herd-iot/herd/internal/twin"
)

// Query benchmarks over 1,000,000 twins in the embedded store (figures in
// docs/benchmarks.md). Run them alone, serialized with other benchmarks:
//
//	flock /tmp/herd-bench.lock go test ./internal/store/sqlite -run '^$' -bench Query1M -benchtime 5x
//
// HERD_BENCH_DIR keeps the generated database between runs.

// queryFleet returns a database of n twins built once per n: tags
// building (0–999), floor and owner; desired fwTarget and interval;
// reported fw ("1.2" on 10% of devices, missing on 5%, else "1.1"),
// temperature, battery and a nested connectivity object, with the
// $metadata trees twin writes produce.
func queryFleet(b *testing.B, n int) *sqlite.DB {
	b.Helper()
	dir := os.Getenv("HERD_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("query-fleet-%d.db", n))
	if _, err := os.Stat(path); err != nil {
		start := time.Now()
		db, err := sqlite.Open(context.Background(), path)
		if err != nil {
			b.Fatal(err)
		}
		r := rand.New(rand.NewSource(1))
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		num := func(n int) json.Number { return json.Number(strconv.Itoa(n)) }
		const batch = 10000
		for i := 0; i < n; i += batch {
			var ops []registry.Op
			for k := i; k < min(i+batch, n); k++ {
				id := fmt.Sprintf("device-%07d", k)
				doc := twin.NewDoc(at)
				reported := map[string]any{"temperature": json.Number(strconv.FormatFloat(r.Float64()*40, 'f', 2, 64)),
					"battery": num(r.Intn(100)), "connectivity": map[string]any{"type": "cellular", "rssi": num(-r.Intn(100))}}
				switch x := r.Intn(100); {
				case x < 10:
					reported["fw"] = "1.2"
				case x < 95:
					reported["fw"] = "1.1"
				}
				for _, p := range []twin.Patch{
					{Tags: twin.Change{Set: true, Value: map[string]any{"building": num(r.Intn(1000)), "floor": num(r.Intn(20)),
						"owner": "team-" + strconv.Itoa(r.Intn(50))}},
						Desired: twin.Change{Set: true, Value: map[string]any{"fwTarget": "1.2", "interval": num(30)}}},
					{Reported: twin.Change{Set: true, Value: reported}},
				} {
					if _, err := doc.Apply(p, false, at); err != nil {
						b.Fatal(err)
					}
				}
				ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: doc, Device: &herd.Device{
					DeviceID: id, GenerationID: "638000000000000000", Status: herd.DeviceEnabled,
					Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{
						PrimaryKey: "cHJpbWFyeWtleXByaW1hcnlrZXlwcmltYXJ5a2V5MDA=", SecondaryKey: "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5c2Vjb25kYTA="}}}})
			}
			if _, err := db.ApplyDevices(context.Background(), ops); err != nil {
				b.Fatal(err)
			}
		}
		db.Close()
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
	for _, bc := range []struct {
		name, query string
		all         bool
	}{
		{"selective/page", "SELECT * FROM devices WHERE tags.building = 43", false},
		{"selective/all", "SELECT * FROM devices WHERE tags.building = 43", true},
		{"selective/count", "SELECT COUNT() FROM devices WHERE tags.building = 43", false},
		{"nonselective/page", "SELECT * FROM devices WHERE properties.reported.fw != '1.2'", false},
		{"nonselective/count", "SELECT COUNT() FROM devices WHERE properties.reported.fw != '1.2'", false},
		{"groupby/page", "SELECT tags.building, COUNT() AS n FROM devices GROUP BY tags.building", false},
		{"nomatch/page", "SELECT * FROM devices WHERE tags.building = 4300", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			items := 0
			for b.Loop() {
				items = 0
				token := ""
				for {
					res, err := svc.Run(ctx, bc.query, 100, token)
					if err != nil {
						b.Fatal(err)
					}
					items += len(res.Items)
					token = res.Continuation
					if !bc.all || token == "" {
						break
					}
				}
			}
			b.ReportMetric(float64(items), "items")
		})
	}
}
