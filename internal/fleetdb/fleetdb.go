// Package fleetdb builds SQLite databases of many registered devices for
// benchmarks: the job benchmarks' fleet (internal/job, bench/) and the
// query benchmarks' fleet (internal/store/sqlite, bench/). A database is
// built once per shape and size into a cache folder and copied for each
// run that writes to it.
package fleetdb

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/sqlite"
	"github.com/herd-iot/herd/internal/twin"
)

// Shape is how a fleet's twins look.
type Shape string

const (
	// Jobs: tags building (index mod 100) and ring "prod"; desired fw
	// "1.0" and interval 30. What the twin-job benchmarks patch.
	Jobs Shape = "fleet"
	// Query: tags building (0–999, random), floor and owner; desired
	// fwTarget and interval; reported fw ("1.2" on 10 %, missing on 5 %,
	// else "1.1"), temperature, battery and a nested connectivity object,
	// with the $metadata trees twin writes produce.
	Query Shape = "query-fleet"
)

// Fixed keys: benchmarks over these fleets do not connect devices.
const (
	primaryKey   = "cHJpbWFyeWtleXByaW1hcnlrZXlwcmltYXJ5a2V5MDA="
	secondaryKey = "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5c2Vjb25kYTA="
)

// DeviceID is the id of device i of a fleet.
func DeviceID(i int) string { return fmt.Sprintf("device-%07d", i) }

// Path returns the path of a database of n devices of the given shape in
// dir, building it first if it is not there (a million devices take a
// minute or two). Keep dir between runs to build once; the file name
// carries the schema version and the page size, so a new migration or page
// size builds anew.
func Path(ctx context.Context, dir string, shape Shape, n int) (path string, built bool, err error) {
	path = filepath.Join(dir, fmt.Sprintf("%s-%d-schema%d-page%d.db", shape, n, sqlite.SchemaVersion(), sqlite.PageSize))
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	tmp := path + ".building"
	os.Remove(tmp)
	if err := Build(ctx, tmp, shape, n); err != nil {
		os.Remove(tmp)
		return "", false, err
	}
	// Closing the last connection checkpoints the WAL into the file, which
	// is then complete on its own (Copy copies only it).
	if st, err := os.Stat(tmp + "-wal"); err == nil && st.Size() > 0 {
		return "", false, fmt.Errorf("build fleet: %s-wal was not checkpointed", tmp)
	}
	os.Remove(tmp + "-wal")
	os.Remove(tmp + "-shm")
	return path, true, os.Rename(tmp, path)
}

// Build writes a new database of n devices of the given shape at path.
func Build(ctx context.Context, path string, shape Shape, n int) error {
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := rand.New(rand.NewSource(1))
	const batch = 10000
	for i := 0; i < n; i += batch {
		ops := make([]registry.Op, 0, batch)
		for k := i; k < min(i+batch, n); k++ {
			id := DeviceID(k)
			doc := twin.NewDoc(at)
			for _, p := range patches(shape, k, r) {
				if _, err := doc.Apply(p, false, at); err != nil {
					return err
				}
			}
			ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: doc, Device: &herd.Device{
				DeviceID: id, GenerationID: "638000000000000000", Status: herd.DeviceEnabled,
				Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{
					PrimaryKey: primaryKey, SecondaryKey: secondaryKey}}}})
		}
		if _, err := db.ApplyDevices(ctx, ops); err != nil {
			return fmt.Errorf("build fleet: %w", err)
		}
	}
	return nil
}

func num(n int) json.Number { return json.Number(strconv.Itoa(n)) }

// patches returns the twin writes that give device k its shape.
func patches(shape Shape, k int, r *rand.Rand) []twin.Patch {
	if shape == Jobs {
		return []twin.Patch{{
			Tags:    twin.Change{Set: true, Value: map[string]any{"building": num(k % 100), "ring": "prod"}},
			Desired: twin.Change{Set: true, Value: map[string]any{"fw": "1.0", "interval": num(30)}},
		}}
	}
	reported := map[string]any{"temperature": json.Number(strconv.FormatFloat(r.Float64()*40, 'f', 2, 64)),
		"battery": num(r.Intn(100)), "connectivity": map[string]any{"type": "cellular", "rssi": num(-r.Intn(100))}}
	switch x := r.Intn(100); {
	case x < 10:
		reported["fw"] = "1.2"
	case x < 95:
		reported["fw"] = "1.1"
	}
	return []twin.Patch{
		{Tags: twin.Change{Set: true, Value: map[string]any{"building": num(r.Intn(1000)), "floor": num(r.Intn(20)),
			"owner": "team-" + strconv.Itoa(r.Intn(50))}},
			Desired: twin.Change{Set: true, Value: map[string]any{"fwTarget": "1.2", "interval": num(30)}}},
		{Reported: twin.Change{Set: true, Value: reported}},
	}
}

// Copy copies the database at src to dst (for a run that writes to it).
func Copy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// BenchQuery is one of the query benchmarks' queries over a Query fleet.
type BenchQuery struct {
	// Name is the benchmark's name (selective/page, …).
	Name string
	// Text is the query.
	Text string
	// All follows every page instead of timing the first.
	All bool
	// What says what is timed, for tables.
	What string
}

// Queries are the query benchmarks: selective, non-selective, grouped and
// empty, first page or every page.
var Queries = []BenchQuery{
	{"selective/page", "SELECT * FROM devices WHERE tags.building = 43", false, "first page (100 twins)"},
	{"selective/all", "SELECT * FROM devices WHERE tags.building = 43", true, "every page"},
	{"selective/count", "SELECT COUNT() FROM devices WHERE tags.building = 43", false, "the condition on every twin"},
	{"nonselective/page", "SELECT * FROM devices WHERE properties.reported.fw != '1.2'", false, "first page"},
	{"nonselective/count", "SELECT COUNT() FROM devices WHERE properties.reported.fw != '1.2'", false, "the condition on every twin"},
	{"groupby/page", "SELECT tags.building, COUNT() AS n FROM devices GROUP BY tags.building", false, "every twin grouped, first page"},
	{"nomatch/page", "SELECT * FROM devices WHERE tags.building = 4300", false, "full scan, empty page"},
}
