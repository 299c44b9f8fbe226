package job_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
)

// checkAborted checks an aborted job's records: each device was invoked
// at most once, a canceled one never, and every invoked one has its
// outcome. It returns how many devices were invoked.
func (e *env) checkAborted(id string, ids []string) int {
	e.t.Helper()
	invoked := 0
	for _, d := range ids {
		n := e.fleet.callCount(d)
		rec := e.records(id)[d]
		switch {
		case n > 1:
			e.t.Errorf("%s invoked %d times", d, n)
		case rec.Status == herd.DeviceJobCanceled && n != 0:
			e.t.Errorf("%s canceled but invoked", d)
		case rec.Status == herd.DeviceJobPending || rec.Status == herd.DeviceJobRunning:
			e.t.Errorf("%s left %s in an ended job", d, rec.Status)
		}
		invoked += n
	}
	return invoked
}

// TestAbortWhenFailuresReachTheThreshold: a method job whose devices
// answer with an error status past the threshold is aborted: pending
// devices are canceled (never invoked), the job ends failed, and the
// reason names the criterion and the figures.
func TestAbortWhenFailuresReachTheThreshold(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 1 })
	ids := append(append(names("a", 3), names("bad", 5)...), names("c", 30)...) // bad* answer 500
	e.devices(ids...)
	e.fleet.connect(ids...)
	// Calls are released one at a time, each once the one before has its
	// outcome written, so that the criterion is checked after each device
	// (outcomes are otherwise written in batches as they arrive, and a
	// batch may hold many devices).
	e.fleet.gate = make(chan struct{})
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot"},
		"herd":{"abort":{"criteria":[{"failureType":"Failed","thresholdPercentage":25,"minExecutedDevices":4}]}}}`)
	final := func() int {
		n := 0
		for _, r := range e.records("m") {
			if r.Status == herd.DeviceJobCompleted || r.Status == herd.DeviceJobFailed {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for released := 0; e.get("m").EndTime == nil; {
		select {
		case e.fleet.gate <- struct{}{}:
			released++
			for final() < released && e.get("m").EndTime == nil {
				if time.Now().After(deadline) {
					t.Fatalf("device %d's outcome was not written", released)
				}
				time.Sleep(5 * time.Millisecond)
			}
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job did not end: %+v", stats(e.get("m")))
		}
	}
	j := e.get("m")
	want := "The job was aborted by its abort criterion (failureType Failed, thresholdPercentage 25, minExecutedDevices 4): 1 of the 4 devices executed (25.0%) failed."
	if j.Status != herd.JobFailed || j.FailureReason != want {
		t.Fatalf("job %s %q", j.Status, j.FailureReason)
	}
	if j.Herd == nil || j.Herd.Abort == nil || j.Herd.Abort.Criteria[0].ThresholdPercentage != 25 {
		t.Errorf("herd options not echoed: %+v", j.Herd)
	}
	// The fourth device crossed the threshold; the fifth may have been
	// claimed before the abort, and then finished.
	n := e.checkAborted("m", ids)
	if n < 4 || n > 5 {
		t.Errorf("%d of %d devices invoked", n, len(ids))
	}
	// Every invoked device answered (a 500 answer is a completed device
	// that the criterion counts as Failed); the rest were canceled.
	st := stats(j)
	if st.DeviceCount != int64(len(ids)) || st.PendingCount != 0 || st.RunningCount != 0 ||
		st.SucceededCount != int64(n) || st.FailedCount != int64(len(ids)-n) {
		t.Errorf("statistics %+v with %d invoked", st, n)
	}
}

// TestAbortCriteriaBelowThresholdOrMinimum: failures under the threshold,
// or before minExecutedDevices have executed, do not abort.
func TestAbortCriteriaBelowThresholdOrMinimum(t *testing.T) {
	e := newEnv(t)
	ids := []string{"a1", "a2", "a3", "a4", "bad1"}
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.create("under", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"abort":{"criteria":[{"failureType":"Any","thresholdPercentage":21,"minExecutedDevices":5}]}}}`)
	e.create("few", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"abort":{"criteria":[{"failureType":"Failed","thresholdPercentage":1,"minExecutedDevices":6}]}}}`)
	for _, id := range []string{"under", "few"} {
		if j := e.waitEnded(id); j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 5, SucceededCount: 5}) {
			t.Errorf("%s: %s %q %+v", id, j.Status, j.FailureReason, stats(j))
		}
	}
}

// TestAbortByFailureType: DeviceNotOnline and TimedOut criteria count
// only their own failures.
func TestAbortByFailureType(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 1 })
	ids := []string{"off1", "off2", "on1", "silent"}
	e.devices(ids...)
	e.fleet.connect("on1", "silent")
	// Two of the four are not online (50%): a 60% NotOnline criterion
	// does not fire, a 50% one does; TimedOut is one of four (25%).
	e.create("notonline", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"abort":{"criteria":[{"failureType":"TimedOut","thresholdPercentage":30,"minExecutedDevices":4},
		{"failureType":"DeviceNotOnline","thresholdPercentage":50,"minExecutedDevices":4}]}}}`)
	j := e.waitEnded("notonline")
	if j.Status != herd.JobFailed || !strings.Contains(j.FailureReason, "failureType DeviceNotOnline, thresholdPercentage 50") ||
		!strings.HasSuffix(j.FailureReason, "2 of the 4 devices executed (50.0%) were not online.") {
		t.Errorf("notonline: %s %q", j.Status, j.FailureReason)
	}
	// The criterion fired on the last outcomes: the job still ends failed,
	// and every device keeps its own outcome (none is canceled).
	for id, r := range e.records("notonline") {
		if want := map[string]herd.DeviceJobStatus{"off1": herd.DeviceJobFailed, "off2": herd.DeviceJobFailed,
			"on1": herd.DeviceJobCompleted, "silent": herd.DeviceJobFailed}[id]; r.Status != want {
			t.Errorf("%s: %s, want %s", id, r.Status, want)
		}
		if strings.HasPrefix(id, "off") && (r.Error == nil || r.Error.Code != "DeviceNotOnline") {
			t.Errorf("%s: %+v", id, r.Error)
		}
	}
	e.create("timedout", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"abort":{"criteria":[{"failureType":"TimedOut","thresholdPercentage":30,"minExecutedDevices":4},
		{"failureType":"DeviceNotOnline","thresholdPercentage":60,"minExecutedDevices":4}]}}}`)
	if j := e.waitEnded("timedout"); j.Status != herd.JobCompleted {
		t.Errorf("timedout: %s %q", j.Status, j.FailureReason)
	}
}

// TestAbortAfterRestart: calls interrupted by a restart count as Failed;
// a job that had crossed its threshold when the hub stopped is aborted
// when it resumes, without invoking another device.
func TestAbortAfterRestart(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 3 })
	ids := names("r", 10)
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.fleet.hold = make(chan struct{})
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x"},
		"herd":{"abort":{"criteria":[{"failureType":"Failed","thresholdPercentage":50,"minExecutedDevices":3}]}}}`)
	e.waitFor("m", "3 in flight", func(j *herd.Job) bool { return j.DeviceJobStatistics.RunningCount == 3 })
	e.stop()
	e.fleet.hold = nil
	e.open(func(c *job.Config) { c.MaxInFlight = 3 })
	j := e.waitEnded("m")
	if j.Status != herd.JobFailed || !strings.HasSuffix(j.FailureReason, "3 of the 3 devices executed (100.0%) failed.") ||
		stats(j) != (herd.DeviceJobStatistics{DeviceCount: 10, FailedCount: 10}) {
		t.Fatalf("%s %q %+v", j.Status, j.FailureReason, stats(j))
	}
	if n := e.checkAborted("m", ids); n != 3 {
		t.Errorf("%d devices invoked, want the 3 interrupted ones", n)
	}
}

// TestAbortTwinJob: twin writes the store refuses count as Failed.
func TestAbortTwinJob(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.Store = poisonedStore{Store: c.Store, poisoned: "d1"} })
	var ids []string
	for i := range 30 {
		ids = append(ids, fmt.Sprintf("d%d", i))
	}
	e.devices(ids...)
	// Batches of 3 in id order: d0, d1, d10 first, which fails twice and
	// goes one by one; d1 fails (1 of 3 executed).
	e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}},
		"herd":{"abort":{"criteria":[{"failureType":"Any","thresholdPercentage":10}]}}}`)
	j := e.waitEndedAdvancing("tw")
	if j.Status != herd.JobFailed || !strings.Contains(j.FailureReason, "failureType Any, thresholdPercentage 10, minExecutedDevices 1") {
		t.Fatalf("%s %q %+v", j.Status, j.FailureReason, stats(j))
	}
	st := stats(j)
	if st.SucceededCount == 0 || st.SucceededCount >= 29 || st.PendingCount != 0 {
		t.Errorf("statistics %+v", st)
	}
}
