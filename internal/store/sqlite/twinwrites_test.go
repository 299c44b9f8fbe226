package sqlite_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/twin"
)

// reportedCounter returns the twin's reported "n" (0 when absent).
func reportedCounter(t *testing.T, d *twin.Doc) int {
	t.Helper()
	b, err := json.Marshal(d.Reported)
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ N int }
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r.N
}

func increment(t *testing.T) func(*herd.Device, *twin.Doc) error {
	return func(_ *herd.Device, d *twin.Doc) error {
		p, err := twin.ParseReported(fmt.Appendf(nil, `{"n":%d}`, reportedCounter(t, d)+1))
		if err != nil {
			return err
		}
		_, err = d.Apply(p, false, at)
		return err
	}
}

// Twin writes that arrive together share transactions; each is still a
// read-modify-write of its own: none is lost, each sees the one before.
func TestConcurrentTwinWritesLoseNothing(t *testing.T) {
	db := openDB(t)
	createDevices(t, db, "c", 4, func() *twin.Doc { return twin.NewDoc(at) })
	const writers = 50
	var wg sync.WaitGroup
	for i := range writers * 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := db.UpdateTwin(context.Background(), fmt.Sprintf("c-%05d", i%4), increment(t)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := range 4 {
		_, doc, err := db.Twin(context.Background(), fmt.Sprintf("c-%05d", i))
		if err != nil {
			t.Fatal(err)
		}
		if n := reportedCounter(t, doc); n != writers || doc.ReportedVersion != writers+1 {
			t.Errorf("device %d: n = %d, reported $version %d after %d increments; want %d and %d",
				i, n, doc.ReportedVersion, writers, writers, writers+1)
		}
	}
}

// A caller that has given up is answered with its context's error and
// writes nothing; after Close, writes are refused rather than left waiting.
func TestTwinWriteCanceledAndClosed(t *testing.T) {
	db := openDB(t)
	createDevices(t, db, "x", 1, func() *twin.Doc { return twin.NewDoc(at) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := db.UpdateTwin(ctx, "x-00000", increment(t)); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled write: %v, want context.Canceled", err)
	}
	_, doc, err := db.Twin(context.Background(), "x-00000")
	if err != nil {
		t.Fatal(err)
	}
	if n := reportedCounter(t, doc); n != 0 {
		t.Errorf("canceled write was kept: n = %d", n)
	}
	if _, _, err := db.UpdateTwin(context.Background(), "nope", increment(t)); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("unknown device: %v, want DeviceNotFound", err)
	}
	db.Close()
	if _, _, err := db.UpdateTwin(context.Background(), "x-00000", increment(t)); err == nil {
		t.Error("a write after Close succeeded")
	}
}
