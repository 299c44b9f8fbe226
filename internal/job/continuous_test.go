package job_test

import (
	"context"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/twin"
)

// tag writes tags of a device's twin straight to the store; with tell the
// engine is told (as the hub tells it after each twin write).
func (e *env) tag(id string, tags map[string]any, tell bool) {
	e.t.Helper()
	if _, _, err := e.db.UpdateTwin(context.Background(), id, func(_ *herd.Device, d *twin.Doc) error {
		_, err := d.Apply(twin.Patch{Tags: twin.Change{Set: true, Value: tags}}, false, e.clock.Now())
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	if tell {
		e.svc.DeviceChanged(id)
	}
}

// A continuous method job calls the devices that match at its start, then
// each device that starts matching later — created and told about, or
// found by the periodic rescan — once, and completes at its deadline.
func TestContinuousMethodJob(t *testing.T) {
	e := newEnv(t)
	e.devices("a1", "a2", "b1")
	e.fleet.connect("a1", "a2", "a3", "a4", "a5", "b1")
	e.create("cj", `{"type":"scheduleDeviceMethod","queryCondition":"STARTSWITH(deviceId, 'a')",
		"cloudToDeviceMethod":{"methodName":"setup"},"maxExecutionTimeInSeconds":900,"herd":{"continuous":true}}`)
	j := e.waitFor("cj", "done with its first devices", func(j *herd.Job) bool { return stats(j).SucceededCount == 2 })
	if j.Status != herd.JobRunning || j.EndTime != nil || j.Herd == nil || !j.Herd.Continuous {
		t.Fatalf("after its first devices: %s %+v", j.Status, j.Herd)
	}
	// A device created later that matches is called; one that does not
	// match is not; telling about a device already done changes nothing.
	e.devices("a3", "b2")
	for _, id := range []string{"a3", "b2", "a1", "a2"} {
		e.svc.DeviceChanged(id)
	}
	e.waitFor("cj", "done with a3", func(j *herd.Job) bool { return stats(j).SucceededCount == 3 })
	// A device no one told about is found by the rescan.
	e.devices("a4")
	e.clock.Advance(5 * time.Minute)
	e.waitFor("cj", "done with a4", func(j *herd.Job) bool { return stats(j).SucceededCount == 4 })
	for id, want := range map[string]int{"a1": 1, "a2": 1, "a3": 1, "a4": 1, "b1": 0, "b2": 0} {
		if n := e.fleet.callCount(id); n != want {
			t.Errorf("%s called %d times, want %d", id, n, want)
		}
	}
	// The deadline completes it: it was never failing.
	e.clock.Advance(10 * time.Minute)
	j = e.waitEnded("cj")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 4, SucceededCount: 4}) || j.FailureReason != "" {
		t.Fatalf("at its deadline: %s %+v %q", j.Status, stats(j), j.FailureReason)
	}
	// Ended, it takes no more devices.
	e.devices("a5")
	e.svc.DeviceChanged("a5")
	e.clock.Advance(5 * time.Minute)
	if r := e.records("cj"); len(r) != 4 {
		t.Errorf("records after the end: %d", len(r))
	}
}

// A continuous twin job patches each device that is tagged into its
// condition, once (its own tag writes do not bring a device back); a
// device tagged while the job is paused is patched on resume, and one
// tagged while the hub is down when it restarts; cancel ends it.
func TestContinuousTwinJob(t *testing.T) {
	e := newEnv(t)
	e.devices("t1", "t2", "t3", "t4", "t5")
	e.tag("t1", map[string]any{"ring": "beta"}, false)
	e.create("ct", `{"type":"scheduleUpdateTwin","queryCondition":"tags.ring = 'beta'",
		"updateTwin":{"etag":"*","tags":{"rolled":true},"properties":{"desired":{"fw":"2.1"}}},"herd":{"continuous":true}}`)
	e.waitFor("ct", "done with t1", func(j *herd.Job) bool { return stats(j).SucceededCount == 1 })
	e.tag("t2", map[string]any{"ring": "beta"}, true)
	e.waitFor("ct", "done with t2", func(j *herd.Job) bool { return stats(j).SucceededCount == 2 })
	_, doc, err := e.db.Twin(context.Background(), "t2")
	if err != nil {
		t.Fatal(err)
	}
	if doc.Desired["fw"] != "2.1" || doc.Tags["rolled"] != true {
		t.Errorf("t2 twin: tags %v desired %v", doc.Tags, doc.Desired)
	}
	// Retagged, t2 still matches: it is not patched again.
	e.tag("t2", map[string]any{"ring": "beta", "again": 1}, true)
	if _, err := e.svc.Pause(context.Background(), "ct", nil); err != nil {
		t.Fatal(err)
	}
	e.waitFor("ct", "paused", func(j *herd.Job) bool { return j.Status == herd.JobPaused })
	e.tag("t3", map[string]any{"ring": "beta"}, true)
	e.clock.Advance(time.Second)
	if r := e.records("ct")["t3"]; r.Status == herd.DeviceJobCompleted {
		t.Error("a paused job patched a device")
	}
	if _, err := e.svc.Resume(context.Background(), "ct", nil); err != nil {
		t.Fatal(err)
	}
	e.waitFor("ct", "done with t3", func(j *herd.Job) bool { return stats(j).SucceededCount == 3 })
	// Restarted: a device tagged while the engine was down is found.
	e.stop()
	e.open()
	e.tag("t4", map[string]any{"ring": "beta"}, false)
	e.stop()
	e.open()
	e.waitFor("ct", "done with t4", func(j *herd.Job) bool { return stats(j).SucceededCount == 4 })
	if j := e.get("ct"); j.Status != herd.JobRunning || stats(j).DeviceCount != 4 {
		t.Errorf("after a restart: %s %+v", j.Status, stats(j))
	}
	if n := e.notes.of("t2"); len(n) != 1 {
		t.Errorf("t2 notified %d times: %q", len(n), n)
	}
	j, err := e.svc.Cancel(context.Background(), "ct", nil)
	if err != nil || j.Status != herd.JobCancelled {
		t.Fatalf("cancel: %+v %v", j, err)
	}
	e.waitEnded("ct")
	e.tag("t5", map[string]any{"ring": "beta"}, true)
	e.clock.Advance(5 * time.Minute)
	if r := e.records("ct"); len(r) != 4 {
		t.Errorf("records after cancel: %d", len(r))
	}
}

// A continuous job that matches nothing at its start waits (running) for
// devices instead of completing.
func TestContinuousJobStartsEmpty(t *testing.T) {
	e := newEnv(t)
	e.fleet.connect("late")
	e.create("ce", `{"type":"scheduleDeviceMethod","queryCondition":"deviceId = 'late'",
		"cloudToDeviceMethod":{"methodName":"hello"},"herd":{"continuous":true}}`)
	j := e.waitFor("ce", "running", func(j *herd.Job) bool { return j.Status == herd.JobRunning })
	if stats(j).DeviceCount != 0 || j.EndTime != nil {
		t.Fatalf("empty continuous job: %s %+v", j.Status, stats(j))
	}
	e.devices("late")
	e.svc.DeviceChanged("late")
	e.waitFor("ce", "done with late", func(j *herd.Job) bool { return stats(j).SucceededCount == 1 })
	if j := e.get("ce"); j.Status != herd.JobRunning {
		t.Errorf("status %s, want running", j.Status)
	}
}
