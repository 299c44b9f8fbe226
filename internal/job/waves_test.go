package job_test

import (
	"context"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

// TestWavesPauseBetween: a method job with waves of 5 %, 50 % and 100 %
// and pauseBetweenWaves calls the canary, pauses until resumed, then the
// next wave, and so on; each device is called once, and GET says which
// wave the job is in, also after a restart between waves.
func TestWavesPauseBetween(t *testing.T) {
	e := newEnv(t)
	ids := names("d", 20)
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"rollout":{"waves":[{"percent":5},{"percent":50},{"percent":100}],"pauseBetweenWaves":true}}}`)
	calls := e.calls(ids)
	for _, w := range []struct {
		done     int64
		nextWave int
	}{{1, 2}, {10, 3}} {
		j := e.waitFor("m", "paused after a wave", func(j *herd.Job) bool {
			return j.Status == herd.JobPaused && j.DeviceJobStatistics.SucceededCount == w.done
		})
		if n := calls(); n != int(w.done) {
			t.Fatalf("%d devices called after a wave of %d", n, w.done)
		}
		if hs := j.HerdStatus; hs == nil || hs.Wave != w.nextWave || hs.Waves != 3 {
			t.Errorf("herdStatus %+v, want wave %d of 3", hs, w.nextWave)
		}
		if w.done == 10 { // a restart while paused between waves keeps the wave
			e.stop()
			e.open()
			if j := e.get("m"); j.Status != herd.JobPaused || j.HerdStatus == nil || j.HerdStatus.Wave != 3 {
				t.Fatalf("after a restart: %s %+v", j.Status, j.HerdStatus)
			}
		}
		if _, err := e.svc.Resume(context.Background(), "m", nil); err != nil {
			t.Fatal(err)
		}
	}
	j := e.waitEnded("m")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 20, SucceededCount: 20}) {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	for _, id := range ids {
		if n := e.fleet.callCount(id); n != 1 {
			t.Errorf("%s called %d times", id, n)
		}
	}
}

// TestWavesTwinJob: without pauseBetweenWaves a twin job runs its waves
// one after another to the end.
func TestWavesTwinJob(t *testing.T) {
	e := newEnv(t)
	ids := names("d", 10)
	e.devices(ids...)
	e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}},
		"herd":{"rollout":{"waves":[{"percent":10},{"percent":40}]}}}`)
	j := e.waitEnded("tw")
	if j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: 10, SucceededCount: 10}) {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
	if hs := j.HerdStatus; hs == nil || hs.Wave != 3 || hs.Waves != 3 {
		t.Errorf("herdStatus %+v, want wave 3 of 3", hs)
	}
}

// TestWavesTwinJobPaused: a twin job's canary wave patches its share of
// the twins only, then waits to be resumed.
func TestWavesTwinJobPaused(t *testing.T) {
	e := newEnv(t)
	ids := names("d", 10)
	e.devices(ids...)
	e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}},
		"herd":{"rollout":{"waves":[{"percent":20}],"pauseBetweenWaves":true}}}`)
	j := e.waitFor("tw", "paused", func(j *herd.Job) bool { return j.Status == herd.JobPaused })
	if stats(j) != (herd.DeviceJobStatistics{DeviceCount: 10, SucceededCount: 2, PendingCount: 8}) {
		t.Fatalf("after the canary: %+v", stats(j))
	}
	if _, err := e.svc.Resume(context.Background(), "tw", nil); err != nil {
		t.Fatal(err)
	}
	if j := e.waitEnded("tw"); j.Status != herd.JobCompleted || j.DeviceJobStatistics.SucceededCount != 10 {
		t.Fatalf("%s %+v", j.Status, stats(j))
	}
}

// TestWavesCanaryAborts: a canary wave whose devices fail past the abort
// threshold fails the job; the next wave never starts.
func TestWavesCanaryAborts(t *testing.T) {
	e := newEnv(t)
	ids := append([]string{"bad0", "bad1"}, names("d", 18)...)
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"rollout":{"waves":[{"percent":10}]},"abort":{"criteria":[{"failureType":"Failed","thresholdPercentage":50,"minExecutedDevices":2}]}}}`)
	j := e.waitEnded("m")
	if j.Status != herd.JobFailed || !strings.Contains(j.FailureReason, "2 of the 2 devices executed") {
		t.Fatalf("%s %q %+v", j.Status, j.FailureReason, stats(j))
	}
	if n := e.calls(ids)(); n != 2 {
		t.Errorf("%d devices called, want the canary's 2", n)
	}
}
