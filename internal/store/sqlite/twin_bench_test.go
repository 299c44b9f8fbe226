package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/sqlite"
	"github.com/herd-iot/herd/internal/twin"
)

// Single-twin benchmarks: what GET and PATCH /twins/{id} and a batch of
// device connects cost in the store (docs/benchmarks.md compares them
// before and after changes to the twin columns):
//
//	flock /tmp/herd-bench.lock go test ./internal/store/sqlite -run '^$' -bench 'Twin(Read|Patch)|ConnectionStates' -count 5

const singleFleet = 10_000

func singleTwinDB(b *testing.B) *sqlite.DB {
	b.Helper()
	path := filepath.Join(b.TempDir(), "herd.db")
	if err := fleetdb.Build(context.Background(), path, fleetdb.Jobs, singleFleet); err != nil {
		b.Fatal(err)
	}
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkTwinRead: one twin read by id (GET /twins/{id}).
func BenchmarkTwinRead(b *testing.B) {
	db := singleTwinDB(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := db.Twin(ctx, fleetdb.DeviceID(i*7919%singleFleet)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTwinPatch: one desired-properties patch in its own transaction
// (PATCH /twins/{id}).
func BenchmarkTwinPatch(b *testing.B) {
	db := singleTwinDB(b)
	ctx := context.Background()
	p, err := twin.ParseService([]byte(`{"properties":{"desired":{"fw":"2.0"}}}`))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := db.UpdateTwin(ctx, fleetdb.DeviceID(i*7919%singleFleet), func(_ *herd.Device, d *twin.Doc) error {
			_, err := d.Apply(p, false, now)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTwinPatchParallel: reported-property patches from many devices
// at once, as when a fleet reports back the desired properties a twin job
// set: 64 writers per core, each patching a device of its own choosing.
func BenchmarkTwinPatchParallel(b *testing.B) {
	db := singleTwinDB(b)
	ctx := context.Background()
	p, err := twin.ParseReported([]byte(`{"fw":"2.0","applied":true}`))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	var next atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fleetdb.DeviceID(int(next.Add(1)*7919) % singleFleet)
			if _, _, err := db.UpdateTwin(ctx, id, func(_ *herd.Device, d *twin.Doc) error {
				_, err := d.Apply(p, false, now)
				return err
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkConnectionStates: a batch of 100 connects recorded in one
// transaction, as the gateway writes them; reported per device.
func BenchmarkConnectionStates(b *testing.B) {
	db := singleTwinDB(b)
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	batch := make([]registry.ConnectionChange, 100)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range batch {
			batch[k] = registry.ConnectionChange{DeviceID: fleetdb.DeviceID((i*100 + k) % singleFleet),
				State: herd.Connected, StateAt: now, ActivityAt: now}
		}
		if err := db.SetConnectionStates(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/device")
}

// BenchmarkActivity: a batch of 1,000 activity-only changes (devices
// answering a method job: at most one a device every 5 s), as the registry
// flushes them; reported per device. On 2026-12-06 ~6 µs a device, the
// same whether each change is its own prepared statement or the batch is
// one UPDATE … FROM json_each (tried): the cost is the rewrite of each
// device's whole row, its twin included, on pages spread over the table.
func BenchmarkActivity(b *testing.B) {
	db := singleTwinDB(b)
	ctx := context.Background()
	batch := make([]registry.ConnectionChange, 1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
		for k := range batch {
			batch[k] = registry.ConnectionChange{DeviceID: fleetdb.DeviceID((i*1000 + k) % singleFleet), ActivityAt: at}
		}
		if err := db.SetConnectionStates(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/device")
}

// BenchmarkDeviceKeys: the device reads of a connect burst: one device by
// id, and DevicesByID of one and of eight ids.
func BenchmarkDeviceKeys(b *testing.B) {
	db := singleTwinDB(b)
	ctx := context.Background()
	b.Run("Device", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := db.Device(ctx, fleetdb.DeviceID(i*7919%singleFleet)); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("DevicesByID-%d", n), func(b *testing.B) {
			ids := make([]string, n)
			for i := 0; i < b.N; i++ {
				for k := range ids {
					ids[k] = fleetdb.DeviceID((i*n + k) * 7919 % singleFleet)
				}
				if got, err := db.DevicesByID(ctx, ids); err != nil || len(got) != n {
					b.Fatal(got, err)
				}
			}
		})
	}
}

// BenchmarkSaveSessions: one write of 1,000 devices' new subscription
// sets (a connect storm's session batch).
func BenchmarkSaveSessions(b *testing.B) {
	db := singleTwinDB(b)
	ctx := context.Background()
	changes := make([]bus.SessionChange, 1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range changes {
			changes[k] = bus.SessionChange{DeviceID: fleetdb.DeviceID((i*1000 + k) % singleFleet), Subscriptions: bus.Feature(1 + i%7)}
		}
		if err := db.SaveSessions(ctx, changes); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(changes)), "ns/device")
}
