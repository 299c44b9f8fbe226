package job_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

// advancePaced advances the fake clock in small steps until the job ends,
// checking at each step that the devices started so far are within what
// the rate allows since the job started: a bucketful plus perSecond for
// each second. It returns the fake time the job took.
func (e *env) advancePaced(id string, started func() int, bucket int, perSecond float64) time.Duration {
	e.t.Helper()
	begin := e.clock.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j := e.get(id)
		elapsed := e.clock.Now().Sub(begin)
		if n, limit := started(), float64(bucket)+perSecond*elapsed.Seconds(); float64(n) > limit {
			e.t.Fatalf("%d devices started after %v, more than the rate allows (%.1f)", n, elapsed, limit)
		}
		if j.EndTime != nil {
			return j.EndTime.Sub(begin)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s did not end: %+v", id, stats(j))
		}
		e.clock.Advance(50 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
}

// wantAllSucceeded checks that a job completed with its n devices
// succeeded.
func (e *env) wantAllSucceeded(id string, n int64) {
	e.t.Helper()
	if j := e.get(id); j.Status != herd.JobCompleted || stats(j) != (herd.DeviceJobStatistics{DeviceCount: n, SucceededCount: n}) {
		e.t.Fatalf("job %s: %s %+v, want completed with %d devices succeeded", id, j.Status, stats(j), n)
	}
}

func (e *env) calls(ids []string) func() int {
	return func() int {
		n := 0
		for _, id := range ids {
			n += e.fleet.callCount(id)
		}
		return n
	}
}

func names(prefix string, n int) []string {
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("%s%02d", prefix, i))
	}
	return ids
}

// TestRolloutFixedRate: a method job at 60 devices a minute calls one
// device a second (a second's worth at once, here one), never more.
func TestRolloutFixedRate(t *testing.T) {
	e := newEnv(t)
	ids := names("d", 6)
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"rollout":{"maxPerMinute":60}}}`)
	took := e.advancePaced("m", e.calls(ids), 1, 1)
	e.wantAllSucceeded("m", 6)
	if took < 5*time.Second {
		t.Errorf("6 devices at 1 a second took %v", took)
	}
	if j := e.get("m"); j.Herd == nil || j.Herd.Rollout == nil || j.Herd.Rollout.MaxPerMinute != 60 {
		t.Errorf("rollout not echoed: %+v", j.Herd)
	}
}

// TestRolloutExponential: the rate doubles with every two devices that
// succeed, up to maxPerMinute; a job paced so finishes well before one at
// the base rate would, and never starts devices faster than the cap.
func TestRolloutExponential(t *testing.T) {
	e := newEnv(t)
	ids := names("d", 12)
	e.devices(ids...)
	e.fleet.connect(ids...)
	e.create("m", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},
		"herd":{"rollout":{"maxPerMinute":240,"exponential":{"baseRatePerMinute":60,"incrementFactor":2,
		"rateIncreaseCriteria":{"numberOfSucceededDevices":2}}}}}`)
	took := e.advancePaced("m", e.calls(ids), 4, 4)
	e.wantAllSucceeded("m", 12)
	// At the base rate 12 devices take 11 s; at the cap, (12-4)/4 = 2 s.
	if took >= 8*time.Second || took < 2*time.Second {
		t.Errorf("12 devices ramping from 1/s to 4/s took %v", took)
	}
}

// TestRolloutTwinJob: a twin job's batches keep to the rate too (here 2
// devices a second, so batches of 2).
func TestRolloutTwinJob(t *testing.T) {
	e := newEnv(t)
	ids := names("d", 10)
	e.devices(ids...)
	e.create("tw", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}},
		"herd":{"rollout":{"maxPerMinute":120}}}`)
	done := func() int { return int(e.get("tw").DeviceJobStatistics.SucceededCount) }
	took := e.advancePaced("tw", done, 2, 2)
	e.wantAllSucceeded("tw", 10)
	if took < 4*time.Second {
		t.Errorf("10 twins at 2 a second took %v", took)
	}
}
