package job_test

import (
	"context"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
)

// waitRecord polls until a device's record satisfies cond.
func (e *env) waitRecord(jobID, deviceID, what string, cond func(herd.DeviceJob) bool) herd.DeviceJob {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := e.records(jobID)[deviceID]
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s of job %s is not %s: %+v", deviceID, jobID, what, r)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// retrying is a record waiting for its next attempt after n.
func retrying(n int64) func(herd.DeviceJob) bool {
	return func(r herd.DeviceJob) bool { return r.Status == herd.DeviceJobPending && r.Attempts == n }
}

// TestRetryDevicesThatComeOnlineLate: offline devices go back to pending
// with their error and are tried again after the backoff, which grows by
// the factor; one that comes online meanwhile succeeds, one that never
// does fails after maxAttempts. The job runs until then.
func TestRetryDevicesThatComeOnlineLate(t *testing.T) {
	e := newEnv(t)
	e.devices("off1", "off2", "on1")
	e.fleet.connect("on1")
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot"},
		"herd":{"retry":{"criteria":[{"failureType":"DeviceNotOnline","maxAttempts":3}],"backoffSeconds":10,"backoffFactor":2}}}`)
	for _, d := range []string{"off1", "off2"} {
		r := e.waitRecord("m", d, "waiting for a retry", retrying(1))
		if r.Error == nil || r.Error.Code != string(herd.ErrDeviceNotOnline) {
			t.Errorf("%s: %+v", d, r)
		}
	}
	e.waitRecord("m", "on1", "completed", func(r herd.DeviceJob) bool { return r.Status == herd.DeviceJobCompleted })
	j := e.get("m")
	if j.Status != herd.JobRunning || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 3, SucceededCount: 1, PendingCount: 2}) {
		t.Fatalf("during the backoff: %s %+v", j.Status, stats(j))
	}
	if r := e.records("m")["on1"]; r.Status != herd.DeviceJobCompleted || r.Attempts != 1 {
		t.Errorf("on1: %+v", r)
	}
	// Not due before its backoff.
	e.clock.Advance(9 * time.Second)
	e.fleet.connect("off1")
	time.Sleep(20 * time.Millisecond)
	if n := e.fleet.callCount("off1"); n != 0 {
		t.Fatalf("off1 called %d times before its retry was due", n)
	}
	e.clock.Advance(time.Second)
	e.waitRecord("m", "off1", "completed", func(r herd.DeviceJob) bool { return r.Status == herd.DeviceJobCompleted })
	e.waitRecord("m", "off2", "waiting for its third attempt", retrying(2))
	e.clock.Advance(19 * time.Second) // the second wait is 20 s
	time.Sleep(20 * time.Millisecond)
	if r := e.records("m")["off2"]; r.Attempts != 2 {
		t.Fatalf("off2 tried again early: %+v", r)
	}
	e.clock.Advance(time.Second)
	j = e.waitEnded("m")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 3, SucceededCount: 2, FailedCount: 1}) {
		t.Fatalf("ended %s %+v", j.Status, stats(j))
	}
	recs := e.records("m")
	if r := recs["off1"]; r.Attempts != 2 || r.Error != nil || r.Outcome == nil || r.Outcome.DeviceMethodResponse.Status != 200 {
		t.Errorf("off1: %+v", r)
	}
	if r := recs["off2"]; r.Status != herd.DeviceJobFailed || r.Attempts != 3 || r.Error == nil || r.Error.Code != string(herd.ErrDeviceNotOnline) {
		t.Errorf("off2: %+v", r)
	}
	if n := e.fleet.callCount("off1"); n != 1 {
		t.Errorf("off1 called %d times", n)
	}
	// devices.jobs answers with the attempts, and filters on them.
	q, err := query.Parse("SELECT * FROM devices.jobs WHERE devices.jobs.attempts > 1")
	if err != nil {
		t.Fatal(err)
	}
	items, _, err := e.db.RunQuery(context.Background(), q, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 {
		t.Errorf("attempts > 1: %d records", len(items))
	}
}

// TestRetryByFailureType: a device that answered with an error status is
// retried under Failed and its last answer is its outcome; a device that
// answered is never retried under DeviceNotOnline; a timeout is retried
// only when TimedOut (or Any) is listed.
func TestRetryByFailureType(t *testing.T) {
	e := newEnv(t)
	e.devices("flaky1", "bad1", "silent")
	e.fleet.connect("flaky1", "bad1", "silent")
	e.create("failed", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"retry":{"criteria":[{"failureType":"Failed","maxAttempts":2}],"backoffSeconds":1}}}`)
	j := e.waitEndedAdvancing("failed")
	recs := e.records("failed")
	if r := recs["flaky1"]; r.Status != herd.DeviceJobCompleted || r.Attempts != 2 || r.Outcome.DeviceMethodResponse.Status != 200 {
		t.Errorf("flaky1: %+v", r)
	}
	if r := recs["bad1"]; r.Attempts != 2 || r.Outcome.DeviceMethodResponse.Status != 500 {
		t.Errorf("bad1: %+v", r)
	}
	if r := recs["silent"]; r.Status != herd.DeviceJobFailed || r.Attempts != 1 {
		t.Errorf("silent (timed out, not retried under Failed): %+v", r)
	}
	if stats(j) != (herd.DeviceJobStatistics{DeviceCount: 3, SucceededCount: 2, FailedCount: 1}) {
		t.Errorf("statistics %+v", stats(j))
	}
	e.create("notonline", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"retry":{"criteria":[{"failureType":"DeviceNotOnline","maxAttempts":5}],"backoffSeconds":1}}}`)
	e.waitEndedAdvancing("notonline")
	for d, r := range e.records("notonline") {
		if r.Attempts != 1 {
			t.Errorf("%s answered but was retried for DeviceNotOnline: %+v", d, r)
		}
	}
	e.create("any", `{"type":"scheduleDeviceMethod","queryCondition":"deviceId = 'silent'","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"retry":{"criteria":[{"failureType":"Any","maxAttempts":3}],"backoffSeconds":1}}}`)
	e.waitEndedAdvancing("any")
	if r := e.records("any")["silent"]; r.Attempts != 3 || r.Error == nil || r.Error.Code != string(herd.ErrGatewayTimeout) {
		t.Errorf("silent under Any: %+v", r)
	}
	if n := e.fleet.callCount("silent"); n != 1+1+3 {
		t.Errorf("silent called %d times, want 5", n)
	}
}

// TestRetriedFailuresDoNotAbort: abort criteria count a device's final
// outcome, not the attempts that are tried again.
func TestRetriedFailuresDoNotAbort(t *testing.T) {
	e := newEnv(t)
	e.devices("off1", "off2", "on1", "on2")
	e.fleet.connect("on1", "on2")
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"abort":{"criteria":[{"failureType":"DeviceNotOnline","thresholdPercentage":50}]},
		"retry":{"criteria":[{"failureType":"DeviceNotOnline","maxAttempts":2}],"backoffSeconds":30}}}`)
	e.waitRecord("m", "off2", "waiting for a retry", retrying(1))
	if j := e.get("m"); j.Status != herd.JobRunning {
		t.Fatalf("aborted on attempts that are retried: %s %q", j.Status, j.FailureReason)
	}
	e.fleet.connect("off1", "off2")
	e.clock.Advance(30 * time.Second)
	if j := e.waitEnded("m"); j.Status != herd.JobCompleted || stats(j).SucceededCount != 4 {
		t.Errorf("%s %q %+v", j.Status, j.FailureReason, stats(j))
	}
}

// TestCancelDuringBackoff: the devices waiting for a retry are canceled
// with the rest, and never called again.
func TestCancelDuringBackoff(t *testing.T) {
	e := newEnv(t)
	e.devices("off1", "on1")
	e.fleet.connect("on1")
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"retry":{"criteria":[{"failureType":"Any","maxAttempts":4}],"backoffSeconds":60}}}`)
	e.waitRecord("m", "off1", "waiting for a retry", retrying(1))
	// on1's answer and off1's failure may be written in either order.
	e.waitRecord("m", "on1", "completed", func(r herd.DeviceJob) bool { return r.Status == herd.DeviceJobCompleted })
	if _, err := e.svc.Cancel(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	j := e.waitEnded("m")
	if j.Status != herd.JobCancelled || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 2, SucceededCount: 1, FailedCount: 1}) {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	e.fleet.connect("off1")
	e.clock.Advance(time.Hour)
	time.Sleep(20 * time.Millisecond)
	if r := e.records("m")["off1"]; r.Status != herd.DeviceJobCanceled || r.Attempts != 1 || e.fleet.callCount("off1") != 0 {
		t.Errorf("off1: %+v, %d calls", r, e.fleet.callCount("off1"))
	}
}

// TestRetryWithinWavesAndRestart: a wave is done when its retries are;
// the next wave waits for them, also across a restart in the backoff, and
// the retry keeps its due time.
func TestRetryWithinWavesAndRestart(t *testing.T) {
	e := newEnv(t)
	e.devices("a1", "a2", "b1", "b2")
	e.fleet.connect("a2", "b1", "b2")
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"rollout":{"waves":[{"percent":50},{"percent":100}]},
		"retry":{"criteria":[{"failureType":"DeviceNotOnline","maxAttempts":3}],"backoffSeconds":40}}}`)
	e.waitRecord("m", "a1", "waiting for a retry", retrying(1))
	e.waitRecord("m", "a2", "completed", func(r herd.DeviceJob) bool { return r.Status == herd.DeviceJobCompleted })
	e.stop()
	e.open()
	e.clock.Advance(39 * time.Second)
	time.Sleep(30 * time.Millisecond)
	if n := e.fleet.callCount("b1") + e.fleet.callCount("b2"); n != 0 {
		t.Fatalf("the second wave started while the first waits for a retry (%d calls)", n)
	}
	if r := e.records("m")["a1"]; r.Attempts != 1 {
		t.Fatalf("a1 tried before its retry was due: %+v", r)
	}
	if h := e.get("m").HerdStatus; h == nil || h.Wave != 1 {
		t.Errorf("herdStatus %+v", h)
	}
	e.fleet.connect("a1")
	e.clock.Advance(time.Second)
	j := e.waitEnded("m")
	if j.Status != herd.JobCompleted || stats(j).SucceededCount != 4 {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	for _, d := range []string{"a1", "a2", "b1", "b2"} {
		if n := e.fleet.callCount(d); n != 1 {
			t.Errorf("%s called %d times", d, n)
		}
	}
	if r := e.records("m")["a1"]; r.Attempts != 2 {
		t.Errorf("a1: %+v", r)
	}
}
