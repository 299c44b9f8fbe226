package job

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

var now = time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)

func TestParseRequestDefaults(t *testing.T) {
	// What the Node SDK's promise form sends: numeric jobId, startTime
	// null, no maxExecutionTimeInSeconds, no connectTimeoutInSeconds.
	r, err := ParseRequest("7", []byte(`{"jobId":7,"type":"scheduleDeviceMethod","queryCondition":" * ",
		"cloudToDeviceMethod":{"methodName":"reboot","payload":null,"responseTimeoutInSeconds":30},"startTime":null}`), now)
	if err != nil {
		t.Fatal(err)
	}
	if r.JobID != "7" || r.Status != herd.JobQueued || r.QueryCondition != "*" || !r.StartTime.Equal(now) ||
		r.MaxExecutionTimeInSeconds != 3600 || r.CloudToDeviceMethod.ConnectTimeoutInSeconds != 0 ||
		string(r.CloudToDeviceMethod.Payload) != "null" || string(r.Request) != `{"methodName":"reboot","payload":null,"responseTimeoutInSeconds":30}` {
		t.Errorf("%+v %s", r.Job, r.Request)
	}
	// A past start time is kept (the job starts at once); the C# SDK's
	// whole-Twin updateTwin is accepted with its read-only members.
	r, err = ParseRequest("j", []byte(`{"type":"scheduleUpdateTwin","queryCondition":"tags.a = 1","startTime":"2020-01-01T00:00:00Z",
		"maxExecutionTimeInSeconds":60,"updateTwin":{"deviceId":null,"etag":"*","version":0,"tags":{"a":2},
		"properties":{"desired":{"x":{"y":null}},"reported":{"$version":1,"$metadata":{}}}}}`), now)
	if err != nil {
		t.Fatal(err)
	}
	if r.StartTime.Year() != 2020 || r.MaxExecutionTimeInSeconds != 60 || r.UpdateTwin.Tags["a"] != json.Number("2") {
		t.Errorf("%+v", r.Job)
	}
	p, err := Patch(r)
	if err != nil || !p.Tags.Set || !p.Desired.Set || p.Reported.Set {
		t.Errorf("patch %+v %v", p, err)
	}
}

// FuzzParseRequest checks that any body is either refused with a herd
// error code or yields a job that can be stored and run.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}}}`,
		`{"jobId":1,"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m","payload":{"x":[1,2]}}}`,
		`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m","timeoutInSeconds":10,"connectTimeoutInSeconds":5},"startTime":"2026-01-01T00:00:00.1234567Z","maxExecutionTimeInSeconds":10}`,
		`{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","properties":{"desired":null}}}`,
		`{"type":"scheduleTwinUpdate"}`, `[]`, `null`, `{"type":1}`, `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":"x"}`,
		`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},"herd":{"rollout":{"maxPerMinute":600,
			"exponential":{"baseRatePerMinute":50,"incrementFactor":2,"rateIncreaseCriteria":{"numberOfSucceededDevices":1000}},
			"waves":[{"percent":1},{"percent":10}],"pauseBetweenWaves":true},"abort":{"criteria":[{"failureType":"Any","thresholdPercentage":10}]}}}`,
		`{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}},"herd":{"rollout":{"waves":[{"percent":50},{"percent":5}]}}}`,
	} {
		f.Add("job-1", s)
	}
	f.Fuzz(func(t *testing.T, id, body string) {
		r, err := ParseRequest(id, []byte(body), now)
		if err != nil {
			if herd.ErrorCodeOf(err) == herd.ErrInternal {
				t.Fatalf("unclassified error for %q: %v", body, err)
			}
			return
		}
		if r.JobID != id || r.Status != herd.JobQueued || r.StartTime == nil || r.MaxExecutionTimeInSeconds <= 0 || !json.Valid(r.Request) {
			t.Fatalf("inconsistent job from %q: %+v", body, r)
		}
		stored := &Record{Job: herd.Job{JobID: r.JobID, Type: r.Type}, Request: r.Request}
		if err := stored.Decode(); err != nil {
			t.Fatalf("stored request does not decode: %v (%s)", err, r.Request)
		}
		if r.Type == herd.JobUpdateTwin {
			if _, err := Patch(r); err != nil {
				t.Fatalf("accepted twin job has no patch: %v", err)
			}
		}
		if r.Herd == nil {
			return
		}
		back, err := DecodeOptions(EncodeOptions(r.Herd))
		if err != nil || EncodeOptions(back) != EncodeOptions(r.Herd) {
			t.Fatalf("herd options do not round-trip: %v %s", err, EncodeOptions(r.Herd))
		}
		if ro := r.Herd.Rollout; ro != nil {
			for _, n := range []int64{0, 1, 7, 1000, 1 << 40} {
				ends := waveEnds(ro, n)
				for i := range ends {
					if ends[i] > n || i > 0 && ends[i] <= ends[i-1] || ends[len(ends)-1] != n {
						t.Fatalf("waves of %d devices: %v", n, ends)
					}
				}
			}
			if ro.MaxPerMinute > 0 || ro.Exponential != nil {
				for _, done := range []int64{0, 1, 1 << 20, 1 << 62} {
					if r := perMinute(*ro, done); !(r >= 1 && r <= MaxRatePerMinute) {
						t.Fatalf("rate %v after %d succeeded", r, done)
					}
				}
			}
		}
	})
}
