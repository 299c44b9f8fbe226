package sqlite_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/sqlite"
	"github.com/herd-iot/herd/internal/twin"
)

var at = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)

func createDevices(t *testing.T, db *sqlite.DB, prefix string, n int, doc func() *twin.Doc) {
	t.Helper()
	ops := make([]registry.Op, n)
	for i := range ops {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		ops[i] = registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: doc(), Device: &herd.Device{
			DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled,
			Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{
				PrimaryKey: "cHJpbWFyeWtleXByaW1hcnlrZXlwcmltYXJ5a2V5MDA=", SecondaryKey: "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5c2Vjb25kYTA="}}}}
	}
	res, err := db.ApplyDevices(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}

// The store's checkpointer copies committed pages into the database file
// while the database is open: writes far below the writer's own automatic
// checkpoint threshold (64 MB) reach the file without a Close.
func TestCheckpointerCopiesCommittedPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herd.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	before := size()
	for b := range 4 {
		createDevices(t, db, fmt.Sprintf("ck%d", b), 1000, func() *twin.Doc { return twin.NewDoc(at) })
	}
	// ~4,000 device rows (about 2 MB) are in the log; the file grows when
	// they are copied into it.
	hubtest.Eventually(t, 10*time.Second, func() bool { return size() >= before+1<<20 },
		"database file %d bytes, was %d: nothing was checkpointed", size(), before)
	st, err := db.RegistryStatistics(context.Background())
	if err != nil || st.TotalDeviceCount != 4000 {
		t.Fatalf("statistics %+v %v", st, err)
	}
}

// Migration 0030 turns $metadata stored as text into JSONB without
// changing any twin.
func TestMetadataMigrationKeepsTwins(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herd.db")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	createDevices(t, db, "m", 3, func() *twin.Doc {
		d := twin.NewDoc(at)
		p, err := twin.ParseService([]byte(`{"tags":{"a":1},"properties":{"desired":{"x":{"y":"z"},"n":null,"k":[1,2]}}}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Apply(p, false, at); err != nil {
			t.Fatal(err)
		}
		r, err := twin.ParseReported([]byte(`{"fw":"1.1","net":{"rssi":-40}}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Apply(r, false, at.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		return d
	})
	want := map[string]string{}
	for _, id := range []string{"m-00000", "m-00001", "m-00002"} {
		want[id] = twinJSON(t, db, id)
	}
	db.Close()

	// The database as migration 0020 left it: $metadata as JSON text.
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`UPDATE devices SET desired_metadata = json(desired_metadata), reported_metadata = json(reported_metadata)`,
		`DELETE FROM schema_migrations WHERE version = 30`,
	} {
		if _, err := raw.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	db, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for id, w := range want {
		if got := twinJSON(t, db, id); got != w {
			t.Errorf("%s after the migration:\n got %s\nwant %s", id, got, w)
		}
	}
	raw, err = sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var kinds string
	if err := raw.QueryRow(`SELECT group_concat(DISTINCT typeof(desired_metadata) || typeof(reported_metadata)) FROM devices`).Scan(&kinds); err != nil {
		t.Fatal(err)
	}
	if kinds != "blobblob" {
		t.Errorf("stored $metadata kinds %q, want JSONB blobs", kinds)
	}
}

func twinJSON(t *testing.T, db *sqlite.DB, id string) string {
	t.Helper()
	dev, doc, err := db.Twin(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(twin.View(dev, doc))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
