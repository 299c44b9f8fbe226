package job

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

func TestParseOptions(t *testing.T) {
	good := `{"rollout":{"maxPerMinute":600,"exponential":{"baseRatePerMinute":50,"incrementFactor":2,
		"rateIncreaseCriteria":{"numberOfSucceededDevices":1000}}},
		"abort":{"criteria":[{"failureType":"any","thresholdPercentage":10,"minExecutedDevices":100}]}}`
	o, err := parseOptions([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if o.Rollout.MaxPerMinute != 600 || o.Rollout.Exponential.RateIncreaseCriteria.NumberOfSucceededDevices != 1000 ||
		o.Abort.Criteria[0].FailureType != herd.FailureAny || o.Abort.Criteria[0].MinExecutedDevices != 100 {
		t.Errorf("parsed %+v", o)
	}
	if back, err := DecodeOptions(EncodeOptions(o)); err != nil || EncodeOptions(back) != EncodeOptions(o) {
		t.Errorf("round trip: %v", err)
	}
	if o, err := parseOptions([]byte(`{"abort":{"criteria":[{"failureType":"Failed","thresholdPercentage":5}]}}`)); err != nil || o.Abort.Criteria[0].MinExecutedDevices != 1 {
		t.Errorf("default minExecutedDevices: %+v %v", o, err)
	}
	if o, err := parseOptions([]byte(`{"rollout":{"waves":[{"percent":1},{"percent":10.5},{"percent":100}],"pauseBetweenWaves":true}}`)); err != nil ||
		len(o.Rollout.Waves) != 3 || o.Rollout.Waves[1].Percent != 10.5 || !o.Rollout.PauseBetweenWaves || o.Rollout.MaxPerMinute != 0 {
		t.Errorf("waves: %+v %v", o, err)
	}
	if o, err := parseOptions([]byte(`null`)); err != nil || o != nil {
		t.Errorf("null: %+v %v", o, err)
	}
	for _, bad := range []string{
		`[]`, `"x"`, `{"retry":{}}`, `{"continuous":"yes"}`, `{"continuous":1}`, `{"speed":1}`,
		`{"continuous":true,"rollout":{"waves":[{"percent":10}]}}`,
		`{"rollout":{}}`, `{"rollout":{"maxPerMinute":0}}`, `{"rollout":{"maxPerMinute":"10"}}`, `{"rollout":{"maxPerMinute":1.5}}`,
		`{"rollout":{"maxPerMinute":100000001}}`,
		`{"rollout":{"waves":[]}}`, `{"rollout":{"waves":[{"percent":0}]}}`, `{"rollout":{"waves":[{"percent":50},{"percent":10}]}}`,
		`{"rollout":{"waves":[{"percent":10},{"percent":10}]}}`, `{"rollout":{"waves":[{"percent":"5"}]}}`, `{"rollout":{"waves":[{"percent":101}]}}`,
		`{"rollout":{"waves":[{}]}}`, `{"rollout":{"waves":[{"percent":5,"devices":3}]}}`, `{"rollout":{"waves":{"percent":5}}}`,
		`{"rollout":{"pauseBetweenWaves":true}}`, `{"rollout":{"waves":[{"percent":5}],"pauseBetweenWaves":"yes"}}`,
		`{"rollout":{"exponential":{"incrementFactor":2,"rateIncreaseCriteria":{"numberOfSucceededDevices":1}}}}`,
		`{"rollout":{"exponential":{"baseRatePerMinute":5,"incrementFactor":1,"rateIncreaseCriteria":{"numberOfSucceededDevices":1}}}}`,
		`{"rollout":{"exponential":{"baseRatePerMinute":5,"incrementFactor":2}}}`,
		`{"rollout":{"exponential":{"baseRatePerMinute":5,"incrementFactor":2,"rateIncreaseCriteria":{"numberOfNotifiedThings":1}}}}`,
		`{"rollout":{"maxPerMinute":10,"exponential":{"baseRatePerMinute":50,"incrementFactor":2,"rateIncreaseCriteria":{"numberOfSucceededDevices":1}}}}`,
		`{"abort":{}}`, `{"abort":{"criteria":[]}}`, `{"abort":{"criteria":{}}}`,
		`{"abort":{"criteria":[{"failureType":"Sad","thresholdPercentage":5}]}}`,
		`{"abort":{"criteria":[{"failureType":"Any","thresholdPercentage":0}]}}`,
		`{"abort":{"criteria":[{"failureType":"Any","thresholdPercentage":101}]}}`,
		`{"abort":{"criteria":[{"failureType":"Any"}]}}`,
		`{"abort":{"criteria":[{"thresholdPercentage":5}]}}`,
		`{"abort":{"criteria":[{"failureType":"Any","thresholdPercentage":5,"minExecutedDevices":0}]}}`,
		`{"abort":{"criteria":[{"failureType":"Any","thresholdPercentage":5,"action":"CANCEL"}]}}`,
		`{"retry":{"criteria":[]}}`, `{"retry":{"criteria":{}}}`, `{"retry":{"backoffSeconds":5}}`,
		`{"retry":{"criteria":[{"failureType":"Sad","maxAttempts":3}]}}`,
		`{"retry":{"criteria":[{"failureType":"Any"}]}}`, `{"retry":{"criteria":[{"maxAttempts":3}]}}`,
		`{"retry":{"criteria":[{"failureType":"Any","maxAttempts":1}]}}`, `{"retry":{"criteria":[{"failureType":"Any","maxAttempts":101}]}}`,
		`{"retry":{"criteria":[{"failureType":"Any","maxAttempts":2.5}]}}`, `{"retry":{"criteria":[{"failureType":"Any","maxAttempts":"3"}]}}`,
		`{"retry":{"criteria":[{"failureType":"Any","maxAttempts":3,"delay":1}]}}`,
		`{"retry":{"criteria":[{"failureType":"TimedOut","maxAttempts":3},{"failureType":"timedout","maxAttempts":2}]}}`,
		`{"retry":{"criteria":[{"failureType":"Any","maxAttempts":3}],"backoffSeconds":0}}`,
		`{"retry":{"criteria":[{"failureType":"Any","maxAttempts":3}],"backoffSeconds":3601}}`,
		`{"retry":{"criteria":[{"failureType":"Any","maxAttempts":3}],"backoffFactor":0.5}}`,
		`{"retry":{"criteria":[{"failureType":"Any","maxAttempts":3}],"backoffFactor":11}}`,
		`{"retry":{"criteria":[{"failureType":"Any","maxAttempts":3}],"jitter":true}}`,
	} {
		if _, err := parseOptions([]byte(bad)); !herd.IsCode(err, herd.ErrArgumentInvalid) && !herd.IsCode(err, herd.ErrArgumentNull) {
			t.Errorf("%s: %v, want ArgumentInvalid or ArgumentNull", bad, err)
		}
	}
}

// herd.continuous: true is kept (with other members or alone), false is no
// option; herd: null is no options.
func TestContinuousOption(t *testing.T) {
	body := `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},"herd":{"continuous":true}}`
	if r, err := ParseRequest("j", []byte(body), time.Now()); err != nil || r.Herd == nil || !r.Herd.Continuous {
		t.Errorf("continuous: %+v %v", r, err)
	}
	o, err := parseOptions([]byte(`{"continuous":true,"rollout":{"maxPerMinute":60}}`))
	if err != nil || !o.Continuous || o.Rollout.MaxPerMinute != 60 {
		t.Errorf("continuous with a rate: %+v %v", o, err)
	}
	if back, err := DecodeOptions(EncodeOptions(o)); err != nil || !back.Continuous {
		t.Errorf("round trip: %+v %v", back, err)
	}
	if o, err := parseOptions([]byte(`{"continuous":false}`)); err != nil || o != nil {
		t.Errorf("continuous false: %+v %v", o, err)
	}
	body = `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},"herd":null}`
	if r, err := ParseRequest("j", []byte(body), time.Now()); err != nil || r.Herd != nil {
		t.Errorf("herd: null: %+v %v", r, err)
	}
}

// herd.retry: defaults, the round trip, and method jobs only.
func TestRetryOptions(t *testing.T) {
	o, err := parseOptions([]byte(`{"retry":{"criteria":[{"failureType":"deviceNotOnline","maxAttempts":5},{"failureType":"Any","maxAttempts":2}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	p := o.Retry
	if len(p.Criteria) != 2 || p.Criteria[0].FailureType != herd.FailureNotOnline || p.Criteria[0].MaxAttempts != 5 ||
		p.BackoffSeconds != DefaultBackoffSeconds || p.BackoffFactor != DefaultBackoffFactor {
		t.Errorf("parsed %+v", p)
	}
	if back, err := DecodeOptions(EncodeOptions(o)); err != nil || EncodeOptions(back) != EncodeOptions(o) {
		t.Errorf("round trip: %v", err)
	}
	if o, err := parseOptions([]byte(`{"retry":{"criteria":[{"failureType":"TimedOut","maxAttempts":3}],"backoffSeconds":1,"backoffFactor":1}}`)); err != nil ||
		o.Retry.BackoffSeconds != 1 || o.Retry.BackoffFactor != 1 {
		t.Errorf("shortest backoff: %+v %v", o, err)
	}
	body := `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"tags":{"a":1}},"herd":{"retry":{"criteria":[{"failureType":"Any","maxAttempts":3}]}}}`
	if _, err := ParseRequest("j", []byte(body), time.Now()); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("retry of a twin job was accepted: %v", err)
	}
}

// retryTime: the first criterion naming the type decides; the wait grows
// by the factor, is capped, and rounds up to a second.
func TestRetryTime(t *testing.T) {
	p := &herd.RetryPolicy{Criteria: []herd.RetryCriterion{{FailureType: herd.FailureNotOnline, MaxAttempts: 4},
		{FailureType: herd.FailureAny, MaxAttempts: 2}}, BackoffSeconds: 1.5, BackoffFactor: 3}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		attempts int
		t        herd.FailureType
		want     time.Duration // 0: not retried
	}{
		{1, herd.FailureNotOnline, 2 * time.Second},  // 1.5 s, rounded up
		{2, herd.FailureNotOnline, 5 * time.Second},  // 4.5 s
		{3, herd.FailureNotOnline, 14 * time.Second}, // 13.5 s
		{4, herd.FailureNotOnline, 0},
		{1, herd.FailureTimedOut, 2 * time.Second},
		{2, herd.FailureTimedOut, 0},
		{1, herd.FailureFailed, 2 * time.Second},
		{1, "", 0},
	} {
		got := retryTime(p, c.attempts, c.t, now)
		if c.want == 0 && !got.IsZero() || c.want != 0 && !got.Equal(now.Add(c.want)) {
			t.Errorf("attempts %d %s: %v, want +%v", c.attempts, c.t, got, c.want)
		}
	}
	long := &herd.RetryPolicy{Criteria: []herd.RetryCriterion{{FailureType: herd.FailureAny, MaxAttempts: 100}}, BackoffSeconds: 60, BackoffFactor: 10}
	if got := retryTime(long, 50, herd.FailureFailed, now); !got.Equal(now.Add(herd.MaxRetryDelaySeconds * time.Second)) {
		t.Errorf("capped: %v", got)
	}
	if retryTime(nil, 1, herd.FailureFailed, now) != (time.Time{}) {
		t.Error("no policy retried")
	}
}

// perMinute: the exponential rate multiplies per step of succeeded
// devices, capped by maxPerMinute (or Herd's bound when unset).
func TestRolloutPerMinute(t *testing.T) {
	ro := herd.Rollout{MaxPerMinute: 1000, Exponential: &herd.ExponentialRate{BaseRatePerMinute: 50, IncrementFactor: 2,
		RateIncreaseCriteria: herd.RateIncreaseCriteria{NumberOfSucceededDevices: 100}}}
	for succeeded, want := range map[int64]float64{0: 50, 99: 50, 100: 100, 250: 200, 400: 800, 500: 1000, 1 << 40: 1000} {
		if got := perMinute(ro, succeeded); got != want {
			t.Errorf("after %d succeeded: %v a minute, want %v", succeeded, got, want)
		}
	}
	ro.MaxPerMinute = 0
	if got := perMinute(ro, 1<<40); got != MaxRatePerMinute {
		t.Errorf("uncapped: %v", got)
	}
	if got := perMinute(herd.Rollout{MaxPerMinute: 600}, 12345); got != 600 {
		t.Errorf("fixed: %v", got)
	}
	if burst(600) != 10 || burst(30) != 1 || burst(61) != 2 {
		t.Error("burst: a second's worth, at least one")
	}
}

// An abort criterion fires at its threshold exactly, once enough devices
// have executed.
func TestAbortCriterionFires(t *testing.T) {
	k := herd.AbortCriterion{FailureType: herd.FailureFailed, ThresholdPercentage: 25, MinExecutedDevices: 4}
	for _, c := range []struct {
		counts FailureCounts
		want   bool
	}{
		{FailureCounts{Executed: 4, Failed: 1}, true},
		{FailureCounts{Executed: 5, Failed: 1}, false},
		{FailureCounts{Executed: 3, Failed: 3}, false}, // under minExecutedDevices
		{FailureCounts{Executed: 4, TimedOut: 4}, false},
		{FailureCounts{}, false},
	} {
		if got := fires(k, c.counts); got != c.want {
			t.Errorf("%+v: fires %v, want %v", c.counts, got, c.want)
		}
	}
	k = herd.AbortCriterion{FailureType: herd.FailureAny, ThresholdPercentage: 33.3, MinExecutedDevices: 1}
	if !fires(k, FailureCounts{Executed: 3, NotOnline: 1}) || fires(k, FailureCounts{Executed: 1000, TimedOut: 332}) {
		t.Error("33.3% of Any")
	}
}

// rolloutSeconds: the preview's time to start a job's devices under its
// rollout.
func TestRolloutSeconds(t *testing.T) {
	if got := rolloutSeconds(herd.Rollout{MaxPerMinute: 600}, 610); got != 60 {
		t.Errorf("610 devices at 600/min (10 at once): %v s, want 60", got)
	}
	if got := rolloutSeconds(herd.Rollout{MaxPerMinute: 600}, 5); got != 0 {
		t.Errorf("5 devices within the first second's worth: %v s", got)
	}
	// 60/min for devices 1–2, 120/min for 2–4, 240/min (the cap) after.
	ro := herd.Rollout{MaxPerMinute: 240, Exponential: &herd.ExponentialRate{BaseRatePerMinute: 60, IncrementFactor: 2,
		RateIncreaseCriteria: herd.RateIncreaseCriteria{NumberOfSucceededDevices: 2}}}
	if got, want := rolloutSeconds(ro, 12), 1+2*0.5+8*0.25; got != want {
		t.Errorf("12 devices ramping: %v s, want %v", got, want)
	}
	ro = herd.Rollout{Exponential: &herd.ExponentialRate{BaseRatePerMinute: 1, IncrementFactor: 1.000001,
		RateIncreaseCriteria: herd.RateIncreaseCriteria{NumberOfSucceededDevices: 1}}}
	if got := rolloutSeconds(ro, 1_000_000); got <= 0 || math.IsInf(got, 0) {
		t.Errorf("a slow ramp over a million devices: %v s", got)
	}
}

// waveEnds: cumulative device counts per wave, rounded up; waves empty at
// a size are left out; the last wave takes the rest.
func TestWaveEnds(t *testing.T) {
	ro := &herd.Rollout{Waves: []herd.Wave{{Percent: 1}, {Percent: 10}, {Percent: 100}}}
	for n, want := range map[int64]string{
		10000: "[100 1000 10000]", 20: "[1 2 20]", 5: "[1 5]", 1: "[1]", 0: "[0]",
	} {
		if got := fmt.Sprint(waveEnds(ro, n)); got != want {
			t.Errorf("%d devices: %s, want %s", n, got, want)
		}
	}
	if got := fmt.Sprint(waveEnds(&herd.Rollout{Waves: []herd.Wave{{Percent: 33.3}}}, 1000)); got != "[333 1000]" {
		t.Errorf("33.3%% of 1000: %s", got)
	}
}
