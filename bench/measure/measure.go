// Package measure holds the measurements that the benchmark harness
// (go run ./bench) and the gateway's own tool (go run ./bench/gateway)
// share, so that their figures are made the same way: a process's memory
// and direct-method round trips.
package measure

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/method"
	"github.com/herd-iot/herd/internal/sim"
)

// RSSKB is this process's resident set size in KB, from /proc/self/status
// (0 where that cannot be read).
func RSSKB() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	return vmRSS(b)
}

// SettledRSS is RSSKB after garbage collection has given memory back to
// the system.
func SettledRSS() int64 {
	for range 3 {
		runtime.GC()
		debug.FreeOSMemory()
		time.Sleep(200 * time.Millisecond)
	}
	return RSSKB()
}

// RoundTrips is a round-trip measurement: calls per second and latency
// quantiles of the calls that succeeded, and how many failed.
type RoundTrips struct {
	Rate     float64
	P50, P99 time.Duration
	Errors   int64
}

// MeasureRoundTrips invokes a direct method ("bench", payload {"n":1})
// through m on the devices in turn from inflight callers, first for a
// warm-up (a third of d, at most 2 s), then for d.
func MeasureRoundTrips(ctx context.Context, m *method.Service, devices []sim.Identity, d time.Duration, inflight int) RoundTrips {
	req := herd.MethodRequest{MethodName: "bench", Payload: json.RawMessage(`{"n":1}`), ResponseTimeoutInSeconds: 30}
	return RoundTripsOf(ctx, func(ctx context.Context, id string) error {
		_, err := m.Invoke(ctx, id, req)
		return err
	}, devices, d, inflight)
}

// RoundTripsOf measures call, made on the devices in turn from inflight
// callers, as MeasureRoundTrips does: a warm-up (a third of d, at most
// 2 s), then d.
func RoundTripsOf(ctx context.Context, call func(ctx context.Context, id string) error, devices []sim.Identity, d time.Duration, inflight int) RoundTrips {
	var next, errs atomic.Int64
	run := func(d time.Duration, record bool) []time.Duration {
		stop := time.Now().Add(d)
		var mu sync.Mutex
		var all []time.Duration
		var wg sync.WaitGroup
		for range inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lat := make([]time.Duration, 0, 1024)
				for time.Now().Before(stop) && ctx.Err() == nil {
					id := devices[int(next.Add(1))%len(devices)].ID
					t0 := time.Now()
					if err := call(ctx, id); err != nil {
						errs.Add(1)
						continue
					}
					lat = append(lat, time.Since(t0))
				}
				if record {
					mu.Lock()
					all = append(all, lat...)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return all
	}
	run(min(2*time.Second, d/3), false)
	errs.Store(0)
	start := time.Now()
	lat := run(d, true)
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return RoundTrips{Errors: errs.Load()}
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return RoundTrips{Rate: float64(len(lat)) / elapsed.Seconds(), P50: q(0.50), P99: q(0.99), Errors: errs.Load()}
}

// ProcRSSKB is a process's resident set size in KB as the system counts
// it (0 where that cannot be read).
func ProcRSSKB(pid int) int64 {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return int64(st.ResidentMemory() / 1024)
}

// Memory is where a process's memory is, in KB: RSS that maps files
// (RssFile: a store's memory-mapped database pages, which the kernel's
// page cache shares), goroutine stacks and the Go heap's spans in use.
type Memory struct{ File, Stacks, Heap int64 }

// MemoryKB reads Memory (call it after SettledRSS, so that the heap is
// what a collection left).
func MemoryKB() Memory {
	b, _ := os.ReadFile("/proc/self/status")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Memory{File: statusKB(b, "RssFile:"), Stacks: int64(ms.StackInuse / 1024), Heap: int64(ms.HeapInuse / 1024)}
}

func vmRSS(status []byte) int64 { return statusKB(status, "VmRSS:") }

func statusKB(status []byte, field string) int64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// CPUTime is the CPU time (user and system) a process has used so far, at
// the kernel's clock-tick resolution (10 ms).
func CPUTime(pid int) (time.Duration, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return time.Duration(st.CPUTime() * float64(time.Second)), nil
}
