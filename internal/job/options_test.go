package job

import (
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

func TestParseOptions(t *testing.T) {
	enforced = true
	defer func() { enforced = false }()
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
	if o, err := parseOptions([]byte(`null`)); err != nil || o != nil {
		t.Errorf("null: %+v %v", o, err)
	}
	for _, bad := range []string{
		`[]`, `"x"`, `{"retry":{}}`, `{"continuous":true}`, `{"speed":1}`,
		`{"rollout":{}}`, `{"rollout":{"maxPerMinute":0}}`, `{"rollout":{"maxPerMinute":"10"}}`, `{"rollout":{"maxPerMinute":1.5}}`,
		`{"rollout":{"waves":[{"percent":1}]}}`, `{"rollout":{"maxPerMinute":100000001}}`,
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
	} {
		if _, err := parseOptions([]byte(bad)); !herd.IsCode(err, herd.ErrArgumentInvalid) && !herd.IsCode(err, herd.ErrArgumentNull) {
			t.Errorf("%s: %v, want ArgumentInvalid or ArgumentNull", bad, err)
		}
	}
}

// Until the engine paces and aborts jobs, a job that asks for it is
// refused rather than run as if it were not.
func TestOptionsRefusedUntilEnforced(t *testing.T) {
	body := `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},"herd":{"rollout":{"maxPerMinute":60}}}`
	if _, err := ParseRequest("j", []byte(body), time.Now()); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("a rollout was accepted: %v", err)
	}
	body = `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"m"},"herd":null}`
	if r, err := ParseRequest("j", []byte(body), time.Now()); err != nil || r.Herd != nil {
		t.Errorf("herd: null: %+v %v", r, err)
	}
}
