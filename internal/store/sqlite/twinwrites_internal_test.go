package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// Writes queued while the writer connection is busy are committed as one
// group. A write of the group that fails (here a stale etag, after its
// function changed the document) keeps nothing and answers its own error;
// the others are kept.
func TestTwinWriteGroup(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const n = 21
	ops := make([]registry.Op, n)
	for i := range ops {
		id := fmt.Sprintf("g-%02d", i)
		ops[i] = registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: twin.NewDoc(at), Device: &herd.Device{
			DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled, Authentication: herd.Authentication{Type: herd.AuthSAS,
				SymmetricKey: herd.SymmetricKey{PrimaryKey: "cHJpbWFyeWtleXByaW1hcnlrZXlwcmltYXJ5a2V5MDA=", SecondaryKey: "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5c2Vjb25kYTA="}}}}
	}
	if _, err := db.ApplyDevices(ctx, ops); err != nil {
		t.Fatal(err)
	}

	// Hold the one writer connection: the writer goroutine takes the first
	// write and waits for the connection; the others queue up behind.
	conn, err := db.write.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := true
	defer func() {
		if held {
			conn.Close()
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("timed out waiting for " + what)
			}
		}
	}
	p, err := twin.ParseReported([]byte(`{"applied":true}`))
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = db.UpdateTwin(ctx, fmt.Sprintf("g-%02d", i), func(_ *herd.Device, d *twin.Doc) error {
				if _, err := d.Apply(p, false, at); err != nil {
					return err
				}
				if i%2 == 1 {
					return herd.Errorf(herd.ErrPreconditionFailed, "stale etag")
				}
				return nil
			})
		}()
	}
	// Every write is queued, or taken by the writer, which waits for the
	// connection: all but the first one or two will be one group.
	waitFor("the writes to queue", func() bool { return db.twinWrites.queued.Load() == n })
	held = false
	conn.Close()
	wg.Wait()

	for i := range n {
		_, doc, err := db.Twin(ctx, fmt.Sprintf("g-%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		_, kept := doc.Reported["applied"]
		switch {
		case i%2 == 1 && !herd.IsCode(errs[i], herd.ErrPreconditionFailed):
			t.Errorf("write %d: error %v, want its own PreconditionFailed", i, errs[i])
		case i%2 == 1 && kept:
			t.Errorf("write %d failed but its change was kept", i)
		case i%2 == 0 && errs[i] != nil:
			t.Errorf("write %d: %v", i, errs[i])
		case i%2 == 0 && (!kept || doc.ReportedVersion != 2):
			t.Errorf("write %d: reported %v, $version %d; want applied and $version 2", i, doc.Reported, doc.ReportedVersion)
		}
	}
}
