package job_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/store/sqlite"
	"github.com/herd-iot/herd/internal/twin"
)

// Benchmarks of the job engine on a real SQLite file (docs/benchmarks.md
// has the figures and commands). They measure wall time from a job's start
// to its completion, so each runs the whole job once per iteration.

// benchFleet returns the path of a copy of a database with n registered
// devices of the jobs shape (fleetdb.Jobs), built once per n
// (HERD_BENCH_DIR keeps it between runs).
func benchFleet(b *testing.B, n int) string {
	b.Helper()
	dir := os.Getenv("HERD_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	start := time.Now()
	src, built, err := fleetdb.Path(context.Background(), dir, fleetdb.Jobs, n)
	if err != nil {
		b.Fatal(err)
	}
	if built {
		b.Logf("built %d devices in %s", n, time.Since(start).Round(time.Millisecond))
	}
	dst := filepath.Join(b.TempDir(), "herd.db")
	if err := fleetdb.Copy(src, dst); err != nil {
		b.Fatal(err)
	}
	return dst
}

func benchService(b *testing.B, path string, methods job.Methods) (*job.Service, *sqlite.DB, func()) {
	b.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	svc := job.New(job.Config{Store: db, Twins: discard{}, Methods: methods, Clock: clock.Real{},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	return svc, db, func() { cancel(); <-done; db.Close() }
}

// waitDone polls a job until it has ended and returns it.
func waitDone(b *testing.B, svc *job.Service, id string) *herd.Job {
	b.Helper()
	for {
		j, err := svc.Get(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		if j.EndTime != nil {
			return j
		}
		time.Sleep(20 * time.Millisecond) // the job times itself; polling only costs CPU
	}
}

func benchTwinJob(b *testing.B, n int) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		svc, _, stop := benchService(b, benchFleet(b, n), nil)
		cpu := cpuTime()
		b.StartTimer()
		if _, err := svc.Create(context.Background(), "rollout", []byte(`{"type":"scheduleUpdateTwin","queryCondition":"*",
			"updateTwin":{"etag":"*","tags":{"ring":"canary"},"properties":{"desired":{"fw":"2.0"}}}}`), nil); err != nil {
			b.Fatal(err)
		}
		j := waitDone(b, svc, "rollout")
		b.StopTimer()
		if j.Status != herd.JobCompleted || j.DeviceJobStatistics.SucceededCount != int64(n) {
			b.Fatalf("job: %s %+v", j.Status, j.DeviceJobStatistics)
		}
		took := j.EndTime.Sub(j.StartTime.Time)
		b.ReportMetric(took.Seconds(), "s/job")
		b.ReportMetric(float64(n)/took.Seconds(), "devices/s")
		// CPU time is steadier than wall time on a shared machine.
		b.ReportMetric((cpuTime() - cpu).Seconds(), "cpu-s/job")
		stop()
	}
}

// BenchmarkTwinJob1M: a twin-update job (a tag and a desired property)
// over 1,000,000 registered devices, from start to completed.
func BenchmarkTwinJob1M(b *testing.B) { benchTwinJob(b, 1_000_000) }

// BenchmarkTwinJob100k is the same over 100,000 devices.
func BenchmarkTwinJob100k(b *testing.B) { benchTwinJob(b, 100_000) }

// discard drops desired notifications (no device is connected).
type discard struct{}

func (discard) Notify(string, twin.Where, int64, []byte) {}

// instant is a fleet in which every device is online and answers at once:
// it measures what the engine and the store cost per device, without a
// transport.
type instant struct{}

func (instant) Online(string) bool                       { return true }
func (instant) WaitOnline(context.Context, string) error { return nil }
func (instant) Invoke(_ context.Context, id string, _ herd.MethodRequest) (*herd.MethodResult, error) {
	return &herd.MethodResult{Status: 200, Payload: json.RawMessage(`{"ok":true}`)}, nil
}

// BenchmarkMethodJobEngine10k: a method job over 10,000 devices that
// answer instantly in-process, results persisted: the engine's and the
// store's ceiling for method jobs.
func BenchmarkMethodJobEngine10k(b *testing.B) {
	const n = 10_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		svc, _, stop := benchService(b, benchFleet(b, n), instant{})
		b.StartTimer()
		if _, err := svc.Create(context.Background(), "m", []byte(`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot"}}`), nil); err != nil {
			b.Fatal(err)
		}
		j := waitDone(b, svc, "m")
		b.StopTimer()
		if j.DeviceJobStatistics.SucceededCount != n {
			b.Fatalf("%+v", j.DeviceJobStatistics)
		}
		took := j.EndTime.Sub(j.StartTime.Time)
		b.ReportMetric(float64(n)/took.Seconds(), "devices/s")
		stop()
	}
}

// BenchmarkStartDelay: 100 jobs scheduled to start over the next 5 s (on
// the real clock); reports how late after its startTime each started
// (started_time − startTime), p50, p99 and max.
func BenchmarkStartDelay(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		svc, db, stop := benchService(b, benchFleet(b, 100), nil)
		base := time.Now().Add(time.Second)
		b.StartTimer()
		for k := range 100 {
			start := base.Add(time.Duration(k) * 50 * time.Millisecond).UTC().Format(time.RFC3339Nano)
			body := fmt.Sprintf(`{"type":"scheduleUpdateTwin","queryCondition":"*","startTime":%q,"updateTwin":{"etag":"*","tags":{"k":%d}}}`, start, k)
			if _, err := svc.Create(context.Background(), fmt.Sprintf("s%03d", k), []byte(body), nil); err != nil {
				b.Fatal(err)
			}
		}
		var delays []time.Duration
		for k := range 100 {
			id := fmt.Sprintf("s%03d", k)
			waitDone(b, svc, id)
			r, err := db.Job(context.Background(), id)
			if err != nil {
				b.Fatal(err)
			}
			delays = append(delays, r.Started.Sub(r.StartTime.Time))
		}
		b.StopTimer()
		slices.Sort(delays)
		b.ReportMetric(float64(delays[49].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(delays[98].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(delays[99].Microseconds())/1000, "max-ms")
		stop()
	}
}
