package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/twin"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// freeAddr returns a loopback address with a port that was free a moment
// ago (the hub must come back on the same ports after a kill).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// crashFleet is a real `herd serve` with devices connected over MQTT that
// count the method calls they get, for the kill -9 tests.
type crashFleet struct {
	t     *testing.T
	bin   string
	dir   string
	args  []string
	c     *service.Client
	serve served

	mu      sync.Mutex
	invoked map[string]int
	called  map[string][]time.Time // when each call came
	// answer is the status a device answers its n-th call with (200 when
	// nil).
	answer func(id string, n int) int
}

// newCrashFleet registers devices dev-00… in a new data folder, starts
// `herd serve` on it with inFlight method calls at most, and connects the
// devices; each answers "upgrade" after 100 ms.
func newCrashFleet(t *testing.T, devices, inFlight int) *crashFleet {
	t.Helper()
	return newCrashFleetAnswering(t, devices, inFlight, nil)
}

// newCrashFleetAnswering is newCrashFleet with devices that answer their
// n-th call with answer(id, n).
func newCrashFleetAnswering(t *testing.T, devices, inFlight int, answer func(id string, n int) int) *crashFleet {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	ctx := context.Background()
	db, err := store.Open(ctx, hubtest.StoreFor(t, dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	var ops []registry.Op
	for i := range devices {
		id := fmt.Sprintf("dev-%02d", i)
		keys[id] = auth.NewKey()
		ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: twin.NewDoc(time.Now()), Device: &herd.Device{
			DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled,
			Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: keys[id], SecondaryKey: auth.NewKey()}}}})
	}
	if _, err := db.ApplyDevices(ctx, ops); err != nil {
		t.Fatal(err)
	}
	db.Close()

	f := &crashFleet{t: t, bin: buildHerd(t), dir: dir, invoked: map[string]int{}, called: map[string][]time.Time{}, answer: answer,
		args: []string{"--https-addr", freeAddr(t), "--mqtt-addr", freeAddr(t), "--job-max-in-flight", fmt.Sprint(inFlight)}}
	mqttAddr := f.args[3]
	serve := serveProcess(t, f.bin, dir, f.args...)
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for id, key := range keys {
		cs := sas.ConnectionString{HostName: "localhost", DeviceID: id, SharedAccessKey: key}.String()
		c, err := device.New(cs, device.WithCA(ca), device.WithAddress(mqttAddr))
		if err != nil {
			t.Fatal(err)
		}
		c.OnMethod("upgrade", func(ctx context.Context, _ json.RawMessage) (int, any) {
			f.mu.Lock()
			f.invoked[id]++
			f.called[id] = append(f.called[id], time.Now())
			status := 200
			if f.answer != nil {
				status = f.answer(id, f.invoked[id])
			}
			f.mu.Unlock()
			time.Sleep(100 * time.Millisecond) // long enough to be in flight when the hub dies
			return status, map[string]string{"device": id}
		})
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	f.c = localClient(t, dir)
	f.serve = serve
	return f
}

// killWhen polls the job until cond holds, then kills the hub (SIGKILL)
// and starts it again on the same folder and ports. It returns the
// devices called by the kill less those the last poll saw succeed: calls
// whose outcome can have been lost. The calls interrupted can be up to
// inFlight more (see interruptible).
func (f *crashFleet) killWhen(jobID string, cond func(st herd.DeviceJobStatistics) bool) int64 {
	f.t.Helper()
	var succeeded int64
	for {
		j, err := f.c.GetJob(context.Background(), jobID)
		if err != nil {
			f.t.Fatal(err)
		}
		if j.EndTime != nil {
			f.t.Fatal("the job ended before the hub could be killed")
		}
		if cond(*j.DeviceJobStatistics) {
			succeeded = j.DeviceJobStatistics.SucceededCount
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.serve.Process.Signal(syscall.SIGKILL)
	f.serve.Wait()
	f.mu.Lock()
	called := int64(len(f.invoked))
	f.mu.Unlock()
	f.serve = serveProcess(f.t, f.bin, f.dir, f.args...)
	f.c = localClient(f.t, f.dir)
	return called - succeeded
}

// logFailed logs the failed devices of a job, with their errors.
func (f *crashFleet) logFailed(jobID string) {
	f.t.Helper()
	for page, err := range f.c.Query(context.Background(), "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '"+jobID+"' AND devices.jobs.status = 'failed'") {
		if err != nil {
			f.t.Log(err)
			break
		}
		djs, _ := page.DeviceJobs()
		for _, d := range djs {
			f.t.Logf("%s failed: %+v", d.DeviceID, d.Error)
		}
	}
}

// interruptible bounds the devices a kill can leave MethodInterrupted:
// the calls made whose outcome was not yet seen (killWhen's count) and the
// devices holding an in-flight slot whose call had not reached the device
// — claimed durably, as a call must be before it is sent, but not yet
// delivered. It is not the in-flight cap alone: a call that answered frees
// its slot before its outcome is written, so more devices than the cap can
// be running in the store.
func interruptible(unseen int64, inFlight int) int64 { return unseen + int64(inFlight) }

// checkAtMostOnce checks every device record of the job against the calls
// the devices got: a completed device ran the method once, a failed one
// (MethodInterrupted) at most once. It returns the devices called.
func (f *crashFleet) checkAtMostOnce(jobID string) int {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for page, err := range f.c.Query(context.Background(), "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '"+jobID+"'") {
		if err != nil {
			f.t.Fatal(err)
		}
		djs, _ := page.DeviceJobs()
		for _, d := range djs {
			n := f.invoked[d.DeviceID]
			switch d.Status {
			case herd.DeviceJobCompleted:
				if n != 1 {
					f.t.Errorf("%s completed but ran the method %d times", d.DeviceID, n)
				}
			case herd.DeviceJobFailed:
				if d.Error == nil || d.Error.Code != "MethodInterrupted" || n > 1 {
					f.t.Errorf("%s failed (%+v) and ran the method %d times", d.DeviceID, d.Error, n)
				}
			case herd.DeviceJobPending:
				if n != 0 {
					f.t.Errorf("%s pending but ran the method %d times", d.DeviceID, n)
				}
			default:
				f.t.Errorf("%s: %s", d.DeviceID, d.Status)
			}
		}
	}
	called := 0
	for _, n := range f.invoked {
		called += min(n, 1)
	}
	return called
}

// TestKillDuringMethodJob kills a real `herd serve` (SIGKILL) while a
// method job has calls in flight to devices connected over MQTT, restarts
// it, and checks the at-most-once contract: no device runs the method
// twice, the calls that were in flight fail with MethodInterrupted, and
// every other device is invoked after the restart (the devices reconnect
// on their own and are waited for).
func TestKillDuringMethodJob(t *testing.T) {
	const devices, inFlight = 40, 4
	f := newCrashFleet(t, devices, inFlight)
	ctx := context.Background()
	if _, err := f.c.ScheduleDeviceMethod(ctx, "upgrade", "*", herd.MethodRequest{MethodName: "upgrade",
		ResponseTimeoutInSeconds: 30, ConnectTimeoutInSeconds: 120}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	maxFailed := interruptible(f.killWhen("upgrade", func(st herd.DeviceJobStatistics) bool { return st.SucceededCount >= inFlight && st.RunningCount > 0 }), inFlight)
	j, err := f.c.WaitJob(ctx, "upgrade", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := *j.DeviceJobStatistics
	if j.Status != herd.JobCompleted || st.DeviceCount != devices || st.SucceededCount+st.FailedCount != devices ||
		st.FailedCount == 0 || st.FailedCount > maxFailed {
		t.Fatalf("job after the restart: %s %+v", j.Status, st)
	}
	f.checkAtMostOnce("upgrade")
	t.Logf("%d devices: %d succeeded, %d in flight at the kill (MethodInterrupted)", devices, st.SucceededCount, st.FailedCount)
}

// TestKillDuringWave kills the hub in the middle of a rollout's first
// wave (25 %, pausing between waves): after the restart the wave finishes
// and no more, the job pauses at its second wave, a second kill while
// paused keeps it there, and resumed it runs the rest; no device runs the
// method twice.
func TestKillDuringWave(t *testing.T) {
	const devices, inFlight, wave = 40, 4, 10
	f := newCrashFleet(t, devices, inFlight)
	ctx := context.Background()
	opts := service.JobOptions{Herd: &herd.JobOptions{Rollout: &herd.Rollout{Waves: []herd.Wave{{Percent: 25}}, PauseBetweenWaves: true}}}
	if _, err := f.c.ScheduleDeviceMethod(ctx, "waves", "*", herd.MethodRequest{MethodName: "upgrade",
		ResponseTimeoutInSeconds: 30, ConnectTimeoutInSeconds: 120}, opts); err != nil {
		t.Fatal(err)
	}
	maxFailed := interruptible(f.killWhen("waves", func(st herd.DeviceJobStatistics) bool { return st.SucceededCount >= 1 && st.RunningCount > 0 }), inFlight)
	var j *herd.Job
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if j, err = f.c.GetJob(ctx, "waves"); err != nil {
			t.Fatal(err)
		}
		if j.Status == herd.JobPaused && j.DeviceJobStatistics.RunningCount == 0 {
			break
		}
		if j.EndTime != nil || time.Now().After(deadline) {
			t.Fatalf("the job did not pause after its first wave: %s %+v", j.Status, *j.DeviceJobStatistics)
		}
	}
	st := *j.DeviceJobStatistics
	if st.SucceededCount+st.FailedCount != wave || st.PendingCount != devices-wave || j.HerdStatus == nil || j.HerdStatus.Wave != 2 {
		t.Fatalf("after the first wave: %+v %+v", st, j.HerdStatus)
	}
	if n := f.checkAtMostOnce("waves"); n > wave {
		t.Fatalf("%d devices called in a wave of %d", n, wave)
	}
	if more := f.killWhen("waves", func(herd.DeviceJobStatistics) bool { return true }); more > st.FailedCount {
		t.Errorf("a kill while paused could interrupt %d calls, want none beyond the %d already failed", more, st.FailedCount)
	}
	if j, err := f.c.GetJob(ctx, "waves"); err != nil || j.Status != herd.JobPaused || j.HerdStatus.Wave != 2 {
		t.Fatalf("after a kill while paused: %+v %v", j, err)
	}
	if _, err := f.c.ResumeJob(ctx, "waves"); err != nil {
		t.Fatal(err)
	}
	j, err := f.c.WaitJob(ctx, "waves", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := *j.DeviceJobStatistics; j.Status != herd.JobCompleted || st.SucceededCount+st.FailedCount != devices || st.FailedCount > maxFailed {
		f.logFailed("waves")
		t.Fatalf("job after resume: %s %+v", j.Status, st)
	}
	f.checkAtMostOnce("waves")
}

// TestKillDuringRetryBackoff kills the hub while half of a method job's
// devices wait for their retry (herd.retry: they answered 503 the first
// time): after the restart each is called again once its backoff has
// passed, not before, and succeeds; no device is called more than the
// policy allows.
func TestKillDuringRetryBackoff(t *testing.T) {
	const devices, inFlight, backoff = 20, 4, 4
	flaky := func(id string) bool { return id[len(id)-1]%2 == 0 }
	f := newCrashFleetAnswering(t, devices, inFlight, func(id string, n int) int {
		if flaky(id) && n == 1 {
			return 503
		}
		return 200
	})
	ctx := context.Background()
	opts := service.JobOptions{Herd: &herd.JobOptions{Retry: &herd.RetryPolicy{
		Criteria: []herd.RetryCriterion{{FailureType: herd.FailureFailed, MaxAttempts: 3}}, BackoffSeconds: backoff, BackoffFactor: 1}}}
	if _, err := f.c.ScheduleDeviceMethod(ctx, "retry", "*", herd.MethodRequest{MethodName: "upgrade",
		ResponseTimeoutInSeconds: 30, ConnectTimeoutInSeconds: 120}, opts); err != nil {
		t.Fatal(err)
	}
	// Every first attempt done, the flaky half back to pending.
	f.killWhen("retry", func(st herd.DeviceJobStatistics) bool {
		return st.SucceededCount == devices/2 && st.PendingCount == devices/2 && st.RunningCount == 0
	})
	j, err := f.c.WaitJob(ctx, "retry", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := *j.DeviceJobStatistics; j.Status != herd.JobCompleted || st.SucceededCount != devices {
		f.logFailed("retry")
		t.Fatalf("job after the restart: %s %+v", j.Status, st)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for page, err := range f.c.Query(ctx, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'retry'") {
		if err != nil {
			t.Fatal(err)
		}
		djs, _ := page.DeviceJobs()
		for _, d := range djs {
			calls := f.called[d.DeviceID]
			want := 1
			if flaky(d.DeviceID) {
				want = 2
			}
			if len(calls) != want || d.Attempts != int64(want) || d.Status != herd.DeviceJobCompleted || d.Outcome.DeviceMethodResponse.Status != 200 {
				t.Errorf("%s: %d calls, record %+v", d.DeviceID, len(calls), d)
				continue
			}
			// The answer took 100 ms; the retry is due backoff seconds
			// after the outcome was recorded.
			if want == 2 && calls[1].Sub(calls[0]) < backoff*time.Second {
				t.Errorf("%s called again %v after its first call, before its backoff of %ds", d.DeviceID, calls[1].Sub(calls[0]), backoff)
			}
		}
	}
}
