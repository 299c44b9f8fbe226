package job_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/twin"
)

func TestTwinJobScheduledStartsAtStartTime(t *testing.T) {
	e := newEnv(t)
	e.devices("d1", "d2", "d3", "d4", "d5", "other")
	start := t0.Add(time.Hour).Format(time.RFC3339Nano)
	j := e.create("tw", `{"jobId":"tw","type":"scheduleUpdateTwin","queryCondition":"STARTSWITH(deviceId, 'd')",
		"updateTwin":{"etag":"*","tags":{"site":"north"},"properties":{"desired":{"fw":"2.0"},"reported":{}}},
		"startTime":"`+start+`","maxExecutionTimeInSeconds":600}`)
	if j.Status != herd.JobQueued {
		t.Errorf("PUT reply status %s, want queued", j.Status)
	}
	e.waitFor("tw", "scheduled", func(j *herd.Job) bool { return j.Status == herd.JobScheduled })
	e.clock.Advance(59 * time.Minute)
	if j := e.get("tw"); j.Status != herd.JobScheduled {
		t.Fatalf("started early: %s", j.Status)
	}
	e.devices("d6") // created before the start: targeted
	e.clock.Advance(time.Minute)
	j = e.waitEnded("tw")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 6, SucceededCount: 6}) {
		t.Fatalf("job: %s %+v", j.Status, stats(j))
	}
	if !j.EndTime.Equal(t0.Add(time.Hour)) || j.StatusMessage == "" {
		t.Errorf("end %v message %q", j.EndTime, j.StatusMessage)
	}
	for _, id := range []string{"d1", "d6"} {
		deadline := time.Now().Add(10 * time.Second)
		for len(e.notes.of(id)) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // notifications follow the commit
		}
		_, doc, err := e.db.Twin(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if doc.Tags["site"] != "north" || doc.Desired["fw"] != "2.0" || doc.DesiredVersion != 2 {
			t.Errorf("%s twin: tags %v desired %v v%d", id, doc.Tags, doc.Desired, doc.DesiredVersion)
		}
		if n := e.notes.of(id); len(n) != 1 || n[0] != `2 {"fw":"2.0","$version":2}` {
			t.Errorf("%s notifications: %q", id, n)
		}
	}
	if _, doc, _ := e.db.Twin(context.Background(), "other"); doc.Tags["site"] != nil {
		t.Error("a device outside the condition was patched")
	}
	// Devices created after the snapshot are not targeted.
	e.devices("d7")
	if r := e.records("tw"); len(r) != 6 || r["d7"].DeviceID != "" {
		t.Errorf("records: %d", len(r))
	}
}

// TestTwinJobClearingDesired: a twin job with "desired": null tells each
// device to remove every key it held (as null), not just the new version,
// on the set-based path and on the one-by-one path for large twins.
func TestTwinJobClearingDesired(t *testing.T) {
	e := newEnv(t)
	e.devices("a", "b", "c")
	e.create("set", `{"type":"scheduleUpdateTwin","queryCondition":"deviceId IN ['a', 'b']","updateTwin":{"etag":"*","properties":{"desired":{"x":1,"y":{"z":2}}}}}`)
	e.waitEnded("set")
	// c's tags are past the set-based statement's size guard, so the
	// clearing job (which also sets a tag) patches c one by one.
	big := strings.Repeat("v", 1000)
	var tags []string
	for i := range 3 {
		tags = append(tags, fmt.Sprintf(`"t%d":%q`, i, big))
	}
	e.create("big", `{"type":"scheduleUpdateTwin","queryCondition":"deviceId = 'c'","updateTwin":{"etag":"*","tags":{`+strings.Join(tags, ",")+`},"properties":{"desired":{"p0":1,"p1":{"q":2}}}}}`)
	e.waitEnded("big")
	e.create("clear", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"n":1},"properties":{"desired":null}}}`)
	if j := e.waitEnded("clear"); j.Status != herd.JobCompleted || stats(j).SucceededCount != 3 {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	want := map[string]string{
		"a": `3 {"$version":3,"x":null,"y":null}`,
		"c": `3 {"$version":3,"p0":null,"p1":null}`,
	}
	for id, w := range want {
		deadline := time.Now().Add(10 * time.Second)
		for len(e.notes.of(id)) < 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // notifications follow the commit
		}
		n := e.notes.of(id)
		if len(n) != 2 || normalizeNote(t, n[1]) != w {
			t.Errorf("%s notifications: %q, want the last %q", id, n, w)
		}
		if _, doc, _ := e.db.Twin(context.Background(), id); len(doc.Desired) != 0 {
			t.Errorf("%s desired after clearing: %v", id, doc.Desired)
		}
	}
}

// normalizeNote re-encodes the body of a "version body" note with sorted
// keys.
func normalizeNote(t *testing.T, note string) string {
	v, body, _ := strings.Cut(note, " ")
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("notification %q is not JSON: %v", body, err)
	}
	b, _ := json.Marshal(m)
	return v + " " + string(b)
}

func TestTwinJobSections(t *testing.T) {
	for _, tc := range []struct {
		name, patch string
		tags        bool
		desired     int64
	}{
		{"tags only", `{"etag":"*","tags":{"t":1}}`, true, 1},
		{"desired only", `{"etag":"*","properties":{"desired":{"d":1}}}`, false, 2},
		{"both", `{"etag":"*","tags":{"t":1},"properties":{"desired":{"d":1}}}`, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.devices("a", "b")
			e.create("j", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":`+tc.patch+`}`)
			if j := e.waitEnded("j"); j.Status != herd.JobCompleted || j.DeviceJobStatistics.SucceededCount != 2 {
				t.Fatalf("%s %+v", j.Status, stats(j))
			}
			_, doc, _ := e.db.Twin(context.Background(), "a")
			if (doc.Tags["t"] != nil) != tc.tags || doc.DesiredVersion != tc.desired || doc.Version != 2 {
				t.Errorf("twin: tags %v desired v%d version %d", doc.Tags, doc.DesiredVersion, doc.Version)
			}
			if tc.desired == 2 {
				// Notifications follow the commit.
				deadline := time.Now().Add(10 * time.Second)
				for len(e.notes.of("a")) == 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
			}
			if got := len(e.notes.of("a")); (got == 1) != (tc.desired == 2) {
				t.Errorf("%d notifications", got)
			}
		})
	}
}

func TestJobMatchingNothingAndBadCondition(t *testing.T) {
	e := newEnv(t)
	e.devices("a")
	e.create("none", `{"type":"scheduleUpdateTwin","queryCondition":"deviceId = 'zzz'","updateTwin":{"etag":"*","tags":{"x":1}}}`)
	if j := e.waitEnded("none"); j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{}) {
		t.Errorf("empty job: %s %+v", j.Status, stats(j))
	}
	// A condition that does not parse is refused before anything is
	// stored (Azure accepts it and fails the job; docs/jobs.md).
	// So is one that parses but that the store cannot compile (SQLite
	// cannot address a key holding both '"' and '.'; PostgreSQL can).
	refused := map[string]string{"bad": "SELECT * FROM devices"}
	if e.path == "" {
		refused["sqlerr"] = `tags['a\".b'] = 1`
	}
	for id, cond := range refused {
		_, err := e.svc.Create(context.Background(), id, []byte(`{"type":"scheduleUpdateTwin","queryCondition":"`+cond+`","updateTwin":{"etag":"*","tags":{"x":1}}}`), nil)
		if herd.ErrorCodeOf(err) != herd.ErrArgumentInvalid || !strings.Contains(err.Error(), "query") {
			t.Errorf("condition %s: %v, want ArgumentInvalid with the parser's message", cond, err)
		}
		if _, err := e.svc.Get(context.Background(), id); !herd.IsCode(err, herd.ErrJobNotFound) {
			t.Errorf("a refused job was stored: %v", err)
		}
	}
	// A stored job whose condition no longer parses (an older Herd) fails
	// when it starts.
	start := herd.NewTime(t0)
	old := &job.Record{Job: herd.Job{JobID: "old", Type: herd.JobUpdateTwin, Status: herd.JobQueued, QueryCondition: "tags.a ==",
		CreatedTime: &start, StartTime: &start, MaxExecutionTimeInSeconds: 60, DeviceJobStatistics: &herd.DeviceJobStatistics{}},
		Request: []byte(`{"etag":"*","tags":{"x":1}}`)}
	if err := e.db.CreateJob(context.Background(), old); err == nil {
		t.Fatal("the store accepted a condition that does not parse")
	}
}

func TestMethodJob(t *testing.T) {
	e := newEnv(t)
	e.devices("on1", "on2", "off", "late", "silent")
	e.fleet.connect("on1", "on2", "silent")
	// connectTimeoutInSeconds 30: offline devices are waited for.
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":
		{"methodName":"reboot","payload":{"delay":1},"responseTimeoutInSeconds":10,"connectTimeoutInSeconds":30}}`)
	e.waitFor("m", "waiting for two offline devices", func(j *herd.Job) bool {
		st := stats(j)
		return st.SucceededCount == 2 && st.FailedCount == 1 && st.PendingCount == 2
	})
	e.fleet.connect("late") // comes online mid-job: invoked at once
	e.waitFor("m", "done with late", func(j *herd.Job) bool { return j.DeviceJobStatistics.SucceededCount == 3 })
	e.clock.Advance(30 * time.Second) // "off" never connects
	j := e.waitEnded("m")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 5, SucceededCount: 3, FailedCount: 2}) {
		t.Fatalf("job: %s %+v", j.Status, stats(j))
	}
	r := e.records("m")
	if o := r["on1"].Outcome; r["on1"].Status != herd.DeviceJobCompleted || o == nil || o.DeviceMethodResponse.Status != 200 ||
		compactJSON(t, o.DeviceMethodResponse.Payload) != `{"device":"on1","method":"reboot"}` {
		t.Errorf("on1: %+v", r["on1"])
	}
	if d := r["off"]; d.Status != herd.DeviceJobFailed || d.Error == nil || d.Error.Code != "DeviceNotOnline" ||
		d.Error.Description != "Timed out waiting for device to connect." || d.Outcome != nil {
		t.Errorf("off: %+v %+v", d, d.Error)
	}
	if d := r["silent"]; d.Status != herd.DeviceJobFailed || d.Error.Code != "GatewayTimeout" {
		t.Errorf("silent: %+v", d)
	}
	if d := r["late"]; d.Status != herd.DeviceJobCompleted {
		t.Errorf("late: %+v", d)
	}
	for _, id := range []string{"on1", "on2", "late", "silent"} {
		if n := e.fleet.callCount(id); n != 1 {
			t.Errorf("%s invoked %d times", id, n)
		}
	}
	if n := e.fleet.callCount("off"); n != 0 {
		t.Errorf("an offline device was invoked %d times", n)
	}
}

func TestMethodJobNoConnectTimeoutFailsOfflineAtOnce(t *testing.T) {
	e := newEnv(t)
	e.devices("on", "off1", "off2")
	e.fleet.connect("on")
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot"}}`)
	j := e.waitEnded("m")
	if stats(j) != (herd.DeviceJobStatistics{DeviceCount: 3, SucceededCount: 1, FailedCount: 2}) || j.Status != herd.JobCompleted {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	if d := e.records("m")["off1"]; d.Error == nil || d.Error.Code != "DeviceNotOnline" {
		t.Errorf("off1: %+v", d)
	}
}

func TestDeadline(t *testing.T) {
	e := newEnv(t)
	e.devices("busy", "off")
	e.fleet.connect("busy")
	e.fleet.hold = make(chan struct{}) // busy never answers
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","maxExecutionTimeInSeconds":60,
		"cloudToDeviceMethod":{"methodName":"reboot","responseTimeoutInSeconds":300,"connectTimeoutInSeconds":300}}`)
	e.waitFor("m", "running busy", func(j *herd.Job) bool { return j.DeviceJobStatistics.RunningCount == 1 })
	e.clock.Advance(60 * time.Second)
	j := e.waitEnded("m")
	if j.Status != herd.JobFailed || !strings.Contains(j.FailureReason, "maxExecutionTimeInSeconds") ||
		stats(j) != (herd.DeviceJobStatistics{DeviceCount: 2, FailedCount: 2}) {
		t.Fatalf("%s %q %+v", j.Status, j.FailureReason, stats(j))
	}
	for id, d := range e.records("m") {
		if d.Error == nil || d.Error.Code != job.ErrCodeDeadline {
			t.Errorf("%s: %+v", id, d)
		}
	}
	// A twin job with a deadline that has passed before it could run
	// many batches still ends failed with every device accounted for.
}

func TestCancelDuringRun(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 2 })
	ids := []string{"a", "b", "c", "d", "e", "f"}
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.fleet.hold = make(chan struct{})
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot"}}`)
	e.waitFor("m", "running 2", func(j *herd.Job) bool { return j.DeviceJobStatistics.RunningCount == 2 })
	j, err := e.svc.Cancel(context.Background(), "m", nil)
	if err != nil || j.Status != herd.JobCancelled || j.EndTime != nil {
		t.Fatalf("cancel: %+v %v", j, err)
	}
	if st := stats(j); st.RunningCount != 2 || st.FailedCount != 4 || st.PendingCount != 0 {
		t.Errorf("after cancel: %+v", st)
	}
	close(e.fleet.hold) // the running calls finish
	j = e.waitEnded("m")
	if j.Status != herd.JobCancelled || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 6, SucceededCount: 2, FailedCount: 4}) {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	canceled := 0
	for _, d := range e.records("m") {
		if d.Status == herd.DeviceJobCanceled {
			canceled++
		}
	}
	if canceled != 4 {
		t.Errorf("%d canceled records, want 4", canceled)
	}
	total := 0
	for _, id := range ids {
		total += e.fleet.callCount(id)
	}
	if total != 2 {
		t.Errorf("%d devices invoked, want the 2 that were running", total)
	}
}

func TestCancelBeforeStart(t *testing.T) {
	e := newEnv(t)
	e.devices("a")
	e.fleet.connect("a")
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x"},
		"startTime":"`+t0.Add(time.Hour).Format(time.RFC3339)+`"}`)
	e.waitFor("m", "scheduled", func(j *herd.Job) bool { return j.Status == herd.JobScheduled })
	j, err := e.svc.Cancel(context.Background(), "m", nil)
	if err != nil || j.Status != herd.JobCancelled || j.EndTime == nil {
		t.Fatalf("%+v %v", j, err)
	}
	e.clock.Advance(2 * time.Hour)
	e.create("after", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x"}}`)
	e.waitEnded("after")
	if j := e.get("m"); j.Status != herd.JobCancelled || j.DeviceJobStatistics.DeviceCount != 0 {
		t.Errorf("cancelled job ran: %+v", j)
	}
	if n := e.fleet.callCount("a"); n != 1 {
		t.Errorf("a invoked %d times, want once (by the second job)", n)
	}
}

func TestManyConcurrentJobsOverOverlappingDevices(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 7 })
	var ids []string
	for i := range 40 {
		ids = append(ids, fmt.Sprintf("dev%02d", i))
	}
	e.devices(ids...)
	e.fleet.connect(ids...)
	const twinJobs, methodJobs = 6, 6
	var wg sync.WaitGroup
	for i := range twinJobs + methodJobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cond := "*"
			if i%2 == 1 {
				cond = "deviceId >= 'dev20'"
			}
			body := fmt.Sprintf(`{"type":"scheduleUpdateTwin","queryCondition":%q,"updateTwin":{"etag":"*","properties":{"desired":{"j%d":%d}}}}`, cond, i, i)
			if i >= twinJobs {
				body = fmt.Sprintf(`{"type":"scheduleDeviceMethod","queryCondition":%q,"cloudToDeviceMethod":{"methodName":"m%d"}}`, cond, i)
			}
			e.create(fmt.Sprintf("job%d", i), body)
		}()
	}
	wg.Wait()
	for i := range twinJobs + methodJobs {
		j := e.waitEnded(fmt.Sprintf("job%d", i))
		want := int64(40)
		if i%2 == 1 {
			want = 20
		}
		if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: want, SucceededCount: want}) {
			t.Errorf("job%d: %s %+v", i, j.Status, stats(j))
		}
	}
	// Each twin job bumped desired $version exactly once per device.
	for _, id := range []string{"dev00", "dev39"} {
		_, doc, _ := e.db.Twin(context.Background(), id)
		want := int64(1 + twinJobs/2)
		if id == "dev39" {
			want = 1 + twinJobs
		}
		if doc.DesiredVersion != want || len(doc.Desired) != int(want-1) {
			t.Errorf("%s desired v%d %v, want v%d", id, doc.DesiredVersion, doc.Desired, want)
		}
		if n := e.fleet.callCount(id); n != int(want-1) {
			t.Errorf("%s invoked %d times, want %d", id, n, want-1)
		}
	}
	if e.fleet.maxInFlight > 7 {
		t.Errorf("%d calls in flight, cap 7", e.fleet.maxInFlight)
	}
}

func TestStatisticsAddUpWhileRunning(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 16 })
	var ids []string
	for i := range 300 {
		ids = append(ids, fmt.Sprintf("s%03d", i))
	}
	e.devices(ids...)
	e.fleet.connect(ids[:200]...)
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x"}}`)
	e.create("t", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"x":1}}}`)
	// e.get checks deviceCount = succeeded + failed + running + pending
	// on every read.
	for _, id := range []string{"m", "t"} {
		e.waitFor(id, "ended", func(j *herd.Job) bool { return j.EndTime != nil })
	}
	if st := stats(e.get("m")); st != (herd.DeviceJobStatistics{DeviceCount: 300, SucceededCount: 200, FailedCount: 100}) {
		t.Errorf("method job: %+v", st)
	}
}

func TestRestartResumesWithoutInvokingTwice(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 3 })
	var ids []string
	for i := range 10 {
		ids = append(ids, fmt.Sprintf("r%d", i))
	}
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.fleet.hold = make(chan struct{})
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x"}}`)
	e.waitFor("m", "3 in flight", func(j *herd.Job) bool { return j.DeviceJobStatistics.RunningCount == 3 })
	e.stop() // the hub stops with 3 calls in flight and 7 pending
	e.fleet.hold = nil
	e.open(func(c *job.Config) { c.MaxInFlight = 3 })
	j := e.waitEnded("m")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 10, SucceededCount: 7, FailedCount: 3}) {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	interrupted := 0
	for id, d := range e.records("m") {
		if n := e.fleet.callCount(id); n != 1 {
			t.Errorf("%s invoked %d times", id, n)
		}
		if d.Error != nil && d.Error.Code == job.ErrCodeInterrupted {
			interrupted++
		}
	}
	if interrupted != 3 {
		t.Errorf("%d interrupted records, want 3", interrupted)
	}
}

// TestGraceLetsCallsFinish: calls in flight when the engine stops finish
// within the grace and are recorded; no call starts after the stop, and the
// next start goes on with the pending devices, invoking none twice. A call
// still in flight after the grace is cut off and recorded interrupted.
func TestGraceLetsCallsFinish(t *testing.T) {
	grace := func(d time.Duration) option {
		return func(c *job.Config) { c.MaxInFlight, c.Grace = 3, d }
	}
	e := newEnv(t, grace(time.Minute))
	var ids []string
	for i := range 10 {
		ids = append(ids, fmt.Sprintf("g%d", i))
	}
	e.devices(ids...)
	e.fleet.connect(ids...)
	hold := make(chan struct{})
	e.fleet.hold = hold
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x"}}`)
	e.waitFor("m", "3 in flight", func(j *herd.Job) bool { return j.DeviceJobStatistics.RunningCount == 3 })
	e.halt()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.stop()
	}()
	// Without the grace, Run would cut the calls off and return at once.
	select {
	case <-stopped:
		t.Fatal("the engine stopped without waiting for its calls in flight")
	case <-time.After(300 * time.Millisecond):
	}
	close(hold) // the calls in flight answer after the stop
	<-stopped
	calls := 0
	for _, id := range ids {
		calls += e.fleet.callCount(id)
	}
	if calls != 3 {
		t.Errorf("%d calls, want the 3 in flight at the stop", calls)
	}
	e.fleet.hold = make(chan struct{}) // the next run's calls outlive a short grace
	e.open(grace(100 * time.Millisecond))
	j := e.waitFor("m", "3 more in flight", func(j *herd.Job) bool {
		return j.DeviceJobStatistics.SucceededCount == 3 && j.DeviceJobStatistics.RunningCount == 3
	})
	if st := stats(j); st.PendingCount != 4 {
		t.Fatalf("after the restart: %+v", st)
	}
	e.stop() // returns after the grace, with the calls cut off
	e.fleet.hold = nil
	e.open(grace(0))
	j = e.waitEnded("m")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 10, SucceededCount: 7, FailedCount: 3}) {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	interrupted := 0
	for id, d := range e.records("m") {
		if n := e.fleet.callCount(id); n != 1 {
			t.Errorf("%s invoked %d times", id, n)
		}
		if d.Error != nil && d.Error.Code == job.ErrCodeInterrupted {
			interrupted++
		}
	}
	if interrupted != 3 {
		t.Errorf("%d interrupted records, want the 3 cut off after the grace", interrupted)
	}
}

func TestRetention(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.Retention = 48 * time.Hour })
	e.devices("a")
	e.create("old", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"x":1}}}`)
	e.waitEnded("old")
	e.clock.Advance(47 * time.Hour)
	if _, err := e.svc.Get(context.Background(), "old"); err != nil {
		t.Fatalf("purged early: %v", err)
	}
	e.clock.Advance(2 * time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := e.svc.Get(context.Background(), "old")
		if herd.IsCode(err, herd.ErrJobNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not purged after the retention period: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
		e.clock.Advance(time.Hour) // the hourly purge re-arms its timer asynchronously
	}
}

// poisonedStore fails every twin batch that includes a poisoned device,
// always the same way, as a store that refuses one twin's write would.
type poisonedStore struct {
	job.Store
	poisoned string
}

func (s poisonedStore) ApplyTwinBatch(ctx context.Context, id string, p twin.Patch, after string, limit int, now time.Time) (job.TwinBatchResult, error) {
	ids, err := s.PendingDevices(ctx, id, after, limit)
	if err != nil {
		return job.TwinBatchResult{}, err
	}
	for _, d := range ids {
		if d == s.poisoned {
			return job.TwinBatchResult{}, errors.New("malformed JSON")
		}
	}
	return s.Store.ApplyTwinBatch(ctx, id, p, after, limit, now)
}

// TestTwinBatchFailingTwiceFailsItsDevice: a batch the store refuses the
// same way twice is tried device by device; the device whose write fails
// is recorded failed and the others succeed, instead of the job retrying
// until its deadline.
func TestTwinBatchFailingTwiceFailsItsDevice(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.Store = poisonedStore{Store: c.Store, poisoned: "d5"} })
	e.devices("d1", "d2", "d3", "d4", "d5", "d6", "d7")
	e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}}}`)
	j := e.waitEndedAdvancing("tw")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 7, SucceededCount: 6, FailedCount: 1}) {
		t.Fatalf("job %s %+v", j.Status, stats(j))
	}
	if j.EndTime.Sub(t0) >= time.Hour {
		t.Errorf("the job ran until %v: it kept retrying", j.EndTime)
	}
	r := e.records("tw")["d5"]
	if r.Status != herd.DeviceJobFailed || r.Error == nil || r.Error.Code != job.ErrCodeTwinWrite || !strings.Contains(r.Error.Description, "could not be stored") {
		t.Errorf("d5 record: %+v %+v", r, r.Error)
	}
}

// TestTwinJobConcurrentBatches: with several batches of one job in flight
// (as on PostgreSQL), every targeted twin is patched exactly once, every
// device has one completed record, each is told once, and the job
// completes with its statistics whichever batch commits last; a batch
// that fails twice the same way is tried one by one while the others go
// on.
func TestTwinJobConcurrentBatches(t *testing.T) {
	for _, workers := range []int{2, 5} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			e := newEnv(t, func(c *job.Config) {
				c.TwinWorkers = workers
				c.Store = poisonedStore{Store: c.Store, poisoned: "d031"}
			})
			var ids []string
			for i := range 100 {
				ids = append(ids, fmt.Sprintf("d%03d", i))
			}
			e.devices(append(ids, "other")...)
			e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"STARTSWITH(deviceId, 'd')","updateTwin":{"etag":"*","tags":{"a":1},"properties":{"desired":{"fw":"2.0"}}}}`)
			j := e.waitEndedAdvancing("tw")
			if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 100, SucceededCount: 99, FailedCount: 1}) {
				t.Fatalf("job %s %+v", j.Status, stats(j))
			}
			recs := e.records("tw")
			for _, id := range ids {
				r := recs[id]
				want := herd.DeviceJobCompleted
				if id == "d031" {
					want = herd.DeviceJobFailed
				}
				if r.Status != want {
					t.Errorf("%s record %s, want %s", id, r.Status, want)
				}
				_, doc, err := e.db.Twin(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if id == "d031" {
					if doc.DesiredVersion != 1 {
						t.Errorf("%s: the failed device was patched (v%d)", id, doc.DesiredVersion)
					}
					continue
				}
				if doc.DesiredVersion != 2 || doc.Tags["a"] == nil {
					t.Errorf("%s twin: tags %v v%d, want patched once", id, doc.Tags, doc.DesiredVersion)
				}
			}
			if len(recs) != 100 {
				t.Errorf("%d records, want 100", len(recs))
			}
			for _, id := range ids {
				if id == "d031" {
					continue
				}
				deadline := time.Now().Add(10 * time.Second)
				for len(e.notes.of(id)) == 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond) // notifications follow the commit
				}
				if n := e.notes.of(id); len(n) != 1 {
					t.Errorf("%s told %d times", id, len(n))
				}
			}
			if _, doc, _ := e.db.Twin(context.Background(), "other"); doc.Tags["a"] != nil {
				t.Error("a device outside the condition was patched")
			}
		})
	}
}

// TestTwinJobWithUnusablePatchFails: a job whose stored patch no longer
// passes validation (stored by an older Herd: arrays nested past the depth
// limit) fails with its devices at once instead of being retried.
func TestTwinJobWithUnusablePatchFails(t *testing.T) {
	e := newEnv(t)
	e.devices("d1", "d2")
	deep := strings.Repeat("[", 1500) + strings.Repeat("]", 1500)
	start := herd.NewTime(t0)
	r := &job.Record{Job: herd.Job{JobID: "old", Type: herd.JobUpdateTwin, Status: herd.JobQueued, QueryCondition: "*",
		CreatedTime: &start, StartTime: &start, MaxExecutionTimeInSeconds: 3600, DeviceJobStatistics: &herd.DeviceJobStatistics{}},
		Request: []byte(`{"etag":"*","tags":{"a":` + deep + `}}`)}
	if err := e.db.CreateJob(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	e.stop() // the engine finds the job when it starts
	e.open()
	j := e.waitEnded("old")
	if j.Status != herd.JobFailed || !strings.Contains(j.FailureReason, "nested at most") || stats(j).FailedCount != 2 {
		t.Errorf("job %s %q %+v", j.Status, j.FailureReason, stats(j))
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// wait waits until the log holds line.
func (b *syncBuffer) wait(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q in:\n%s", line, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startDelay is the sample count and sum of the
// herd_job_start_delay_seconds histogram in reg.
func startDelay(t *testing.T, reg *prometheus.Registry) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "herd_job_start_delay_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("no herd_job_start_delay_seconds")
	return 0, 0
}

// TestJobEndLogAndStartDelay: every job that ends writes one log line with
// its status, counts and duration (also one cancelled before it started),
// and a job created with a start time in the past counts as started on
// time, not an hour late.
func TestJobEndLogAndStartDelay(t *testing.T) {
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *job.Config) {
		c.Log = slog.New(slog.NewTextHandler(&logs, nil))
		c.Metrics = reg
	})
	e.devices("a", "b")
	past := t0.Add(-time.Hour).Format(time.RFC3339)
	e.create("late", `{"type":"scheduleUpdateTwin","queryCondition":"*","startTime":"`+past+`","updateTwin":{"etag":"*","tags":{"x":1}}}`)
	e.waitEnded("late")
	later := t0.Add(time.Hour).Format(time.RFC3339)
	e.create("never", `{"type":"scheduleUpdateTwin","queryCondition":"*","startTime":"`+later+`","updateTwin":{"etag":"*","tags":{"x":1}}}`)
	if _, err := e.svc.Cancel(context.Background(), "never", nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`msg="job ended" job_id=late op=scheduleUpdateTwin status=completed devices=2 succeeded=2 failed=0 duration_ms=0`,
		`msg="job ended" job_id=never op=scheduleUpdateTwin status=cancelled devices=0 succeeded=0 failed=0`,
	} {
		logs.wait(t, want)
	}
	if n := strings.Count(logs.String(), `msg="job ended" job_id=late`); n != 1 {
		t.Errorf("%d end lines for one job", n)
	}
	if n, sum := startDelay(t, reg); n != 1 || sum > 1 {
		t.Errorf("start delay: %d samples, sum %v s; want one on-time start", n, sum)
	}
}

// staleActive lists, with the active jobs, every job it listed before as
// it was then: what a schedule pass reads when a job's runner ends just
// after the pass read the list.
type staleActive struct {
	job.Store
	mu   sync.Mutex
	seen map[string]*job.Record
}

func (s *staleActive) ActiveJobs(ctx context.Context) ([]*job.Record, error) {
	jobs, err := s.Store.ActiveJobs(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	listed := map[string]bool{}
	for _, r := range jobs {
		listed[r.JobID] = true
		if _, ok := s.seen[r.JobID]; !ok {
			s.seen[r.JobID] = r
		}
	}
	for id, r := range s.seen {
		if !listed[id] {
			jobs = append(jobs, r)
		}
	}
	return jobs, nil
}

// TestEndedJobListedStale: a job that a schedule pass lists as it was
// before its runner ended (the list was read just before) is neither
// started nor logged as ended again.
func TestEndedJobListedStale(t *testing.T) {
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	stale := &staleActive{seen: map[string]*job.Record{}}
	e := newEnv(t, func(c *job.Config) {
		stale.Store = c.Store
		c.Store = stale
		c.Log = slog.New(slog.NewTextHandler(&logs, nil))
		c.Metrics = reg
	})
	e.devices("a", "b")
	e.create("once", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"x":1}}}`)
	e.waitEnded("once")
	// Every later pass lists "once" as queued; each of these jobs makes
	// at least one.
	for _, id := range []string{"next1", "next2"} {
		e.create(id, `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"y":1}}}`)
		e.waitEnded(id)
	}
	logs.wait(t, `msg="job ended" job_id=next2`)
	for _, line := range []string{`msg="job started" job_id=once`, `msg="job ended" job_id=once`} {
		if n := strings.Count(logs.String(), line); n != 1 {
			t.Errorf("%d lines %q, want 1:\n%s", n, line, logs.String())
		}
	}
	if n, _ := startDelay(t, reg); n != 3 {
		t.Errorf("start delay: %d samples for 3 jobs", n)
	}
}

// compactJSON is a JSON text as encoding/json writes it (a store may keep
// JSON as JSON rather than as the bytes it was given: PostgreSQL's jsonb).
func compactJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("not JSON: %s", raw)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestPauseAndResume(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 2 })
	ids := []string{"a", "b", "c", "d", "e", "f"}
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.fleet.hold = make(chan struct{})
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","maxExecutionTimeInSeconds":60,"cloudToDeviceMethod":{"methodName":"reboot"}}`)
	e.waitFor("m", "running 2", func(j *herd.Job) bool { return j.DeviceJobStatistics.RunningCount == 2 })
	j, err := e.svc.Pause(context.Background(), "m", nil)
	if err != nil || j.Status != herd.JobPaused || j.EndTime != nil {
		t.Fatalf("pause: %+v %v", j, err)
	}
	close(e.fleet.hold) // the running calls finish; nothing else starts
	j = e.waitFor("m", "the running calls done", func(j *herd.Job) bool { return j.DeviceJobStatistics.SucceededCount == 2 })
	if j.Status != herd.JobPaused || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 6, SucceededCount: 2, PendingCount: 4}) {
		t.Fatalf("paused: %s %+v", j.Status, stats(j))
	}
	total := func() int {
		n := 0
		for _, id := range ids {
			n += e.fleet.callCount(id)
		}
		return n
	}
	if n := total(); n != 2 {
		t.Errorf("%d devices invoked while paused, want 2", n)
	}
	if j, err := e.svc.Resume(context.Background(), "m", nil); err != nil || j.Status != herd.JobRunning {
		t.Fatalf("resume: %+v %v", j, err)
	}
	j = e.waitEnded("m")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 6, SucceededCount: 6}) {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	for _, id := range ids {
		if n := e.fleet.callCount(id); n != 1 {
			t.Errorf("%s invoked %d times, want once", id, n)
		}
	}
	if _, err := e.svc.Pause(context.Background(), "nope", nil); !herd.IsCode(err, herd.ErrJobNotFound) {
		t.Errorf("pause unknown: %v", err)
	}
}

func TestPausedJobFailsAtItsDeadline(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 1 })
	e.devices("a", "b")
	e.fleet.connect("a", "b")
	e.fleet.hold = make(chan struct{})
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","maxExecutionTimeInSeconds":60,"cloudToDeviceMethod":{"methodName":"reboot"}}`)
	e.waitFor("m", "running 1", func(j *herd.Job) bool { return j.DeviceJobStatistics.RunningCount == 1 })
	if _, err := e.svc.Pause(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	close(e.fleet.hold)
	e.waitFor("m", "a done", func(j *herd.Job) bool { return j.DeviceJobStatistics.SucceededCount == 1 })
	e.clock.Advance(61 * time.Second)
	j := e.waitEnded("m")
	if j.Status != herd.JobFailed || !strings.Contains(j.FailureReason, "maxExecutionTimeInSeconds") ||
		stats(j) != (herd.DeviceJobStatistics{DeviceCount: 2, SucceededCount: 1, FailedCount: 1}) {
		t.Fatalf("%s %q %+v", j.Status, j.FailureReason, stats(j))
	}
}

// TestPauseCommittedUnderARunner: a pause that the runner did not hear of
// (it raced with the runner's start, or came from another node) stops the
// runner at its next claim: no device starts while paused, the run ends
// without a store error, and resume goes on with each device called once.
func TestPauseCommittedUnderARunner(t *testing.T) {
	e := newEnv(t, func(c *job.Config) { c.MaxInFlight = 1 })
	ids := []string{"a", "b", "c"}
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.fleet.hold = make(chan struct{})
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot"}}`)
	e.waitFor("m", "running 1", func(j *herd.Job) bool { return j.DeviceJobStatistics.RunningCount == 1 })
	if _, err := e.db.PauseJob(context.Background(), "m", t0); err != nil { // the store only: the runner is not told
		t.Fatal(err)
	}
	close(e.fleet.hold)
	j := e.waitFor("m", "a done", func(j *herd.Job) bool { return j.DeviceJobStatistics.SucceededCount == 1 })
	if j.Status != herd.JobPaused || j.DeviceJobStatistics.RunningCount != 0 {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	if _, err := e.svc.Resume(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	if j := e.waitEnded("m"); j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 3, SucceededCount: 3}) {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	for _, id := range ids {
		if n := e.fleet.callCount(id); n != 1 {
			t.Errorf("%s invoked %d times", id, n)
		}
	}
}

// A job cancelled on another node (another Service on the store, running
// no engine) stops here once Refresh is told: a device it was waiting for
// is no longer waited for.
func TestRefreshStopsAJobCancelledElsewhere(t *testing.T) {
	var logs syncLog
	e := newEnv(t, func(c *job.Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	e.devices("away")
	e.create("w", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot","connectTimeoutInSeconds":300}}`)
	e.waitFor("w", "running", func(j *herd.Job) bool { return j.Status == herd.JobRunning })
	other := job.New(job.Config{Store: e.db, Clock: e.clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if _, err := other.Cancel(context.Background(), "w", nil); err != nil {
		t.Fatal(err)
	}
	e.svc.Refresh(context.Background())
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), `msg="job ended" job_id=w`); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the runner of the job cancelled elsewhere did not stop:\n%s", logs.String())
		}
	}
	if j := e.get("w"); j.Status != herd.JobCancelled {
		t.Errorf("job %s", j.Status)
	}
}

// syncLog is a log destination safe for concurrent writes.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
