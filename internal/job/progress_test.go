package job_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
)

// TestWatchCoalescesProgress: a job's watchers are signalled at once for
// the first change, then at most once per job.ProgressEvery, and always for
// the last change; they learn when the engine stops.
func TestWatchCoalescesProgress(t *testing.T) {
	e := newEnv(t) // twin batches of 3
	e.devices("d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9")
	w := e.svc.Watch("tw")
	defer w.Close()
	signalled := func(what string) {
		t.Helper()
		select {
		case <-w.C():
		case <-time.After(10 * time.Second):
			t.Fatalf("no signal for %s", what)
		}
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case <-w.C():
			t.Fatalf("a signal %s", what)
		default:
		}
	}
	start := t0.Add(time.Hour).Format(time.RFC3339Nano)
	e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}},"startTime":"`+start+`"}`)
	e.waitFor("tw", "scheduled", func(j *herd.Job) bool { return j.Status == herd.JobScheduled })
	signalled("scheduling")
	quiet("without a change")

	// Start, three batches and the end within one instant of the fake
	// clock: one signal now, the rest coalesced into one more.
	e.clock.Advance(time.Hour)
	e.waitEnded("tw")
	signalled("the start")
	quiet("before ProgressEvery passed")
	e.clock.Advance(job.ProgressEvery)
	signalled("the coalesced changes")
	if j := e.get("tw"); j.Status != herd.JobCompleted || j.DeviceJobStatistics.SucceededCount != 9 {
		t.Errorf("after the last signal: %s %+v", j.Status, *j.DeviceJobStatistics)
	}
	quiet("after the last change")

	// A job nobody watches schedules no timers.
	other := e.svc.Watch("other")
	other.Close()
	e.create("unwatched", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"b":1}}}`)
	e.waitEnded("unwatched")
	quiet("for another job")

	e.stop()
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done is not closed after the engine stopped")
	}
}

// TestFollowDevices: a twin job's device records reach FollowDevices once
// each, batch by batch, all before the call that says the job ended.
func TestFollowDevices(t *testing.T) {
	e := newEnv(t) // twin batches of 3
	e.devices("d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9")
	start := t0.Add(time.Hour).Format(time.RFC3339Nano)
	e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}},"startTime":"`+start+`"}`)
	first := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	var told []string
	toldAtEnd := -1
	go func() {
		done <- e.svc.FollowDevices(context.Background(), "tw", time.Hour, func() error { return nil },
			func(j *herd.Job, ended bool) error {
				once.Do(func() { close(first) })
				if ended {
					toldAtEnd = len(told)
				}
				return nil
			}, func(records []herd.DeviceJob, lagged bool) error {
				if lagged {
					t.Error("lagged")
				}
				for _, r := range records {
					if r.Status != herd.DeviceJobCompleted {
						t.Errorf("record %+v", r)
					}
					told = append(told, r.DeviceID)
				}
				return nil
			})
	}()
	<-first
	e.clock.Advance(time.Hour)
	if err := awaitFollow(t, e, done); err != nil {
		t.Fatal(err)
	}
	// Batches may commit out of order (PostgreSQL runs two at once).
	slices.Sort(told)
	if toldAtEnd != 9 || strings.Join(told, ",") != "d1,d2,d3,d4,d5,d6,d7,d8,d9" {
		t.Errorf("told %v (%d before the end)", told, toldAtEnd)
	}
}

// awaitFollow moves the fake clock on by job.ProgressEvery until the
// FollowDevices call reporting on done returns, and returns its error.
func awaitFollow(t *testing.T, e *env, done <-chan error) error {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-done:
			return err
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("FollowDevices did not return")
		}
		e.clock.Advance(job.ProgressEvery)
		time.Sleep(time.Millisecond)
	}
}

// TestFollowDevicesLostNote: another node's write of the job whose end
// note never comes (that node was killed mid-write, or NATS lost the
// note) does not hold a device stream open forever: once the job has
// ended, the stream waits job.endedGrace, says it lagged, and ends.
func TestFollowDevicesLostNote(t *testing.T) {
	e := newEnv(t) // twin batches of 3
	e.devices("d1", "d2", "d3")
	start := t0.Add(time.Hour).Format(time.RFC3339Nano)
	e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}},"startTime":"`+start+`"}`)
	first := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	var mu sync.Mutex
	var told []string
	lagged, ended := false, false
	go func() {
		done <- e.svc.FollowDevices(context.Background(), "tw", time.Hour, func() error { return nil },
			func(j *herd.Job, end bool) error {
				once.Do(func() { close(first) })
				mu.Lock()
				ended = ended || end
				mu.Unlock()
				return nil
			}, func(records []herd.DeviceJob, lag bool) error {
				mu.Lock()
				defer mu.Unlock()
				lagged = lagged || lag
				for _, r := range records {
					told = append(told, r.DeviceID)
				}
				return nil
			})
	}()
	<-first
	e.svc.ApplyProgress(job.ProgressEvent{JobID: "tw", Kind: "begin"}) // its "end" is lost
	e.clock.Advance(time.Hour)
	e.waitEnded("tw")
	if err := awaitFollow(t, e, done); err != nil { // without the grace: waits for an end that never comes
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(told)
	if !lagged || !ended || strings.Join(told, ",") != "d1,d2,d3" {
		t.Errorf("lagged %v, ended %v, told %v; want lagged, ended and d1–d3", lagged, ended, told)
	}
}
