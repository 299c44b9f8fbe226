package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
)

// Bounds of the "herd" member's numbers.
const (
	// MaxRatePerMinute bounds a rollout's rates: a hundred million
	// devices a minute is far past what one hub does, and keeps the
	// pacing arithmetic exact.
	MaxRatePerMinute = 100_000_000
	// MaxIncrementFactor bounds an exponential rollout's factor.
	MaxIncrementFactor = 100
)

// parseOptions checks a job's "herd" member: an object whose members are
// each known and within bounds. It returns nil for a null member.
func parseOptions(raw json.RawMessage) (*herd.JobOptions, error) {
	if isNull(raw) {
		return nil, nil
	}
	members, err := object(raw, "herd")
	if err != nil {
		return nil, err
	}
	out := &herd.JobOptions{}
	for k, v := range members {
		switch k {
		case "rollout":
			if out.Rollout, err = parseRollout(v); err != nil {
				return nil, err
			}
		case "abort":
			if out.Abort, err = parseAbort(v); err != nil {
				return nil, err
			}
		case "retry":
			if out.Retry, err = parseRetry(v); err != nil {
				return nil, err
			}
		case "continuous":
			if json.Unmarshal(v, &out.Continuous) != nil {
				return nil, invalid("herd.continuous must be true or false, not %s", v)
			}
		default:
			return nil, invalid("herd.%s is not a member of a job's herd options (rollout, abort, retry, continuous)", k)
		}
	}
	if out.Continuous && out.Rollout != nil && len(out.Rollout.Waves) > 0 {
		// A wave is a share of the job's devices, which a continuous job
		// does not know until its deadline.
		return nil, invalid("herd.continuous cannot be combined with herd.rollout.waves: a continuous job's devices are not known in advance")
	}
	if out.Rollout == nil && out.Abort == nil && out.Retry == nil && !out.Continuous {
		return nil, nil
	}
	return out, nil
}

// object decodes a JSON object into its raw members; null members are
// dropped (as absent).
func object(raw json.RawMessage, name string) (map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, invalid("%s must be a JSON object, not %s", name, raw)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalid("%s is not a valid JSON object: %v", name, err)
	}
	for k, v := range m {
		if isNull(v) {
			delete(m, k)
		}
	}
	return m, nil
}

func parseRollout(raw json.RawMessage) (*herd.Rollout, error) {
	members, err := object(raw, "herd.rollout")
	if err != nil {
		return nil, err
	}
	out := &herd.Rollout{}
	for k, v := range members {
		switch k {
		case "maxPerMinute":
			if out.MaxPerMinute, err = perMinuteValue(v, "herd.rollout.maxPerMinute"); err != nil {
				return nil, err
			}
		case "exponential":
			if out.Exponential, err = parseExponential(v); err != nil {
				return nil, err
			}
		case "waves":
			if out.Waves, err = parseWaves(v); err != nil {
				return nil, err
			}
		case "pauseBetweenWaves":
			if json.Unmarshal(v, &out.PauseBetweenWaves) != nil {
				return nil, invalid("herd.rollout.pauseBetweenWaves must be true or false, not %s", v)
			}
		default:
			return nil, invalid("herd.rollout.%s is not a member of a rollout (maxPerMinute, exponential, waves, pauseBetweenWaves)", k)
		}
	}
	if out.MaxPerMinute == 0 && out.Exponential == nil && len(out.Waves) == 0 {
		return nil, invalid("herd.rollout needs maxPerMinute, exponential or waves")
	}
	if out.PauseBetweenWaves && len(out.Waves) == 0 {
		return nil, invalid("herd.rollout.pauseBetweenWaves needs herd.rollout.waves")
	}
	if e := out.Exponential; e != nil && out.MaxPerMinute > 0 && e.BaseRatePerMinute > out.MaxPerMinute {
		return nil, invalid("herd.rollout.exponential.baseRatePerMinute (%d) is above maxPerMinute (%d)", e.BaseRatePerMinute, out.MaxPerMinute)
	}
	return out, nil
}

// MaxWaves bounds herd.rollout.waves.
const MaxWaves = 20

// parseWaves reads a rollout's waves: 1 to MaxWaves objects whose percent
// rises strictly, each above 0 and at most 100.
func parseWaves(raw json.RawMessage) ([]herd.Wave, error) {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil, invalid("herd.rollout.waves must be an array, not %s", raw)
	}
	if len(list) == 0 || len(list) > MaxWaves {
		return nil, invalid("herd.rollout.waves must hold from 1 to %d waves, not %d", MaxWaves, len(list))
	}
	out := make([]herd.Wave, len(list))
	for i, w := range list {
		name := fmt.Sprintf("herd.rollout.waves[%d]", i)
		members, err := object(w, name)
		if err != nil {
			return nil, err
		}
		v, ok := members["percent"]
		if !ok {
			return nil, herd.Errorf(herd.ErrArgumentNull, "%s.percent is required", name)
		}
		for k := range members {
			if k != "percent" {
				return nil, invalid("%s.%s is not a member of a wave (percent)", name, k)
			}
		}
		f, ok := number(v)
		if !ok || f <= 0 || f > 100 {
			return nil, invalid("%s.percent must be a number above 0 and at most 100, not %s", name, v)
		}
		if i > 0 && f <= out[i-1].Percent {
			return nil, invalid("%s.percent (%s) must be above the wave before's (%s): the percentages are cumulative", name, v,
				strconv.FormatFloat(out[i-1].Percent, 'f', -1, 64))
		}
		out[i].Percent = f
	}
	return out, nil
}

// perMinuteValue reads a whole number of devices per minute within bounds.
func perMinuteValue(raw json.RawMessage, name string) (int64, error) {
	v, err := wholeNumber(raw)
	if err != nil || v < 1 || v > MaxRatePerMinute {
		return 0, invalid("%s must be a whole number of devices per minute from 1 to %d, not %s", name, MaxRatePerMinute, raw)
	}
	return v, nil
}

func parseExponential(raw json.RawMessage) (*herd.ExponentialRate, error) {
	members, err := object(raw, "herd.rollout.exponential")
	if err != nil {
		return nil, err
	}
	out := &herd.ExponentialRate{}
	var haveBase, haveFactor, haveCriteria bool
	for k, v := range members {
		switch k {
		case "baseRatePerMinute":
			if out.BaseRatePerMinute, err = perMinuteValue(v, "herd.rollout.exponential.baseRatePerMinute"); err != nil {
				return nil, err
			}
			haveBase = true
		case "incrementFactor":
			f, ok := number(v)
			if !ok || f <= 1 || f > MaxIncrementFactor {
				return nil, invalid("herd.rollout.exponential.incrementFactor must be a number above 1 and at most %d, not %s", MaxIncrementFactor, v)
			}
			out.IncrementFactor, haveFactor = f, true
		case "rateIncreaseCriteria":
			c, err := object(v, "herd.rollout.exponential.rateIncreaseCriteria")
			if err != nil {
				return nil, err
			}
			for ck, cv := range c {
				if ck != "numberOfSucceededDevices" {
					return nil, invalid("herd.rollout.exponential.rateIncreaseCriteria.%s is not supported (numberOfSucceededDevices is)", ck)
				}
				n, err := wholeNumber(cv)
				if err != nil || n < 1 {
					return nil, invalid("herd.rollout.exponential.rateIncreaseCriteria.numberOfSucceededDevices must be a whole number of at least 1, not %s", cv)
				}
				out.RateIncreaseCriteria.NumberOfSucceededDevices, haveCriteria = n, true
			}
		default:
			return nil, invalid("herd.rollout.exponential.%s is not a member of an exponential rate (baseRatePerMinute, incrementFactor, rateIncreaseCriteria)", k)
		}
	}
	switch {
	case !haveBase:
		return nil, herd.Errorf(herd.ErrArgumentNull, "herd.rollout.exponential.baseRatePerMinute is required")
	case !haveFactor:
		return nil, herd.Errorf(herd.ErrArgumentNull, "herd.rollout.exponential.incrementFactor is required")
	case !haveCriteria:
		return nil, herd.Errorf(herd.ErrArgumentNull, "herd.rollout.exponential.rateIncreaseCriteria.numberOfSucceededDevices is required")
	}
	return out, nil
}

// number reads a JSON number (not a string holding one).
func number(raw json.RawMessage) (float64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' {
		return 0, false
	}
	var f float64
	if json.Unmarshal(raw, &f) != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// MaxAbortCriteria bounds herd.abort.criteria.
const MaxAbortCriteria = 10

var failureTypes = []herd.FailureType{herd.FailureFailed, herd.FailureTimedOut, herd.FailureNotOnline, herd.FailureAny}

func parseAbort(raw json.RawMessage) (*herd.AbortPolicy, error) {
	members, err := object(raw, "herd.abort")
	if err != nil {
		return nil, err
	}
	out := &herd.AbortPolicy{}
	for k, v := range members {
		if k != "criteria" {
			return nil, invalid("herd.abort.%s is not a member of an abort policy (criteria)", k)
		}
		if out.Criteria, err = parseList(v, "herd.abort.criteria", MaxAbortCriteria, parseCriterion); err != nil {
			return nil, err
		}
	}
	if len(out.Criteria) == 0 {
		return nil, herd.Errorf(herd.ErrArgumentNull, "herd.abort needs criteria")
	}
	return out, nil
}

func parseCriterion(raw json.RawMessage, name string) (herd.AbortCriterion, error) {
	var out herd.AbortCriterion
	members, err := object(raw, name)
	if err != nil {
		return out, err
	}
	var haveType, haveThreshold bool
	out.MinExecutedDevices = 1
	for k, v := range members {
		switch k {
		case "failureType":
			if out.FailureType, err = failureType(v, name); err != nil {
				return out, err
			}
			haveType = true
		case "thresholdPercentage":
			f, ok := number(v)
			if !ok || f <= 0 || f > 100 {
				return out, invalid("%s.thresholdPercentage must be a number above 0 and at most 100, not %s", name, v)
			}
			out.ThresholdPercentage, haveThreshold = f, true
		case "minExecutedDevices":
			n, err := wholeNumber(v)
			if err != nil || n < 1 {
				return out, invalid("%s.minExecutedDevices must be a whole number of at least 1, not %s", name, v)
			}
			out.MinExecutedDevices = n
		default:
			return out, invalid("%s.%s is not a member of an abort criterion (failureType, thresholdPercentage, minExecutedDevices)", name, k)
		}
	}
	switch {
	case !haveType:
		return out, herd.Errorf(herd.ErrArgumentNull, "%s.failureType is required", name)
	case !haveThreshold:
		return out, herd.Errorf(herd.ErrArgumentNull, "%s.thresholdPercentage is required", name)
	}
	return out, nil
}

// Bounds and defaults of herd.retry.
const (
	MaxRetryCriteria      = 4
	MaxRetryAttempts      = 100
	DefaultBackoffSeconds = 30
	DefaultBackoffFactor  = 2
	MaxBackoffFactor      = 10
)

func parseRetry(raw json.RawMessage) (*herd.RetryPolicy, error) {
	members, err := object(raw, "herd.retry")
	if err != nil {
		return nil, err
	}
	out := &herd.RetryPolicy{BackoffSeconds: DefaultBackoffSeconds, BackoffFactor: DefaultBackoffFactor}
	for k, v := range members {
		switch k {
		case "criteria":
			if out.Criteria, err = parseList(v, "herd.retry.criteria", MaxRetryCriteria, parseRetryCriterion); err != nil {
				return nil, err
			}
			for i, c := range out.Criteria {
				for _, prev := range out.Criteria[:i] {
					if prev.FailureType == c.FailureType {
						return nil, invalid("herd.retry.criteria names failureType %s twice", c.FailureType)
					}
				}
			}
		case "backoffSeconds":
			f, ok := number(v)
			if !ok || f < 1 || f > herd.MaxRetryDelaySeconds {
				return nil, invalid("herd.retry.backoffSeconds must be a number of seconds from 1 to %d, not %s", herd.MaxRetryDelaySeconds, v)
			}
			out.BackoffSeconds = f
		case "backoffFactor":
			f, ok := number(v)
			if !ok || f < 1 || f > MaxBackoffFactor {
				return nil, invalid("herd.retry.backoffFactor must be a number from 1 to %d, not %s", MaxBackoffFactor, v)
			}
			out.BackoffFactor = f
		default:
			return nil, invalid("herd.retry.%s is not a member of a retry policy (criteria, backoffSeconds, backoffFactor)", k)
		}
	}
	if len(out.Criteria) == 0 {
		return nil, herd.Errorf(herd.ErrArgumentNull, "herd.retry needs criteria")
	}
	return out, nil
}

func parseRetryCriterion(raw json.RawMessage, name string) (herd.RetryCriterion, error) {
	var out herd.RetryCriterion
	members, err := object(raw, name)
	if err != nil {
		return out, err
	}
	var haveType, haveMax bool
	for k, v := range members {
		switch k {
		case "failureType":
			if out.FailureType, err = failureType(v, name); err != nil {
				return out, err
			}
			haveType = true
		case "maxAttempts":
			n, err := wholeNumber(v)
			if err != nil || n < 2 || n > MaxRetryAttempts {
				return out, invalid("%s.maxAttempts must be a whole number from 2 to %d (the first call counts as one attempt), not %s", name, MaxRetryAttempts, v)
			}
			out.MaxAttempts, haveMax = int(n), true
		default:
			return out, invalid("%s.%s is not a member of a retry criterion (failureType, maxAttempts)", name, k)
		}
	}
	switch {
	case !haveType:
		return out, herd.Errorf(herd.ErrArgumentNull, "%s.failureType is required", name)
	case !haveMax:
		return out, herd.Errorf(herd.ErrArgumentNull, "%s.maxAttempts is required", name)
	}
	return out, nil
}

// failureType reads a failure type (case-insensitive).
func failureType(raw json.RawMessage, name string) (herd.FailureType, error) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", invalid("%s.failureType must be a string", name)
	}
	for _, t := range failureTypes {
		if strings.EqualFold(s, string(t)) {
			return t, nil
		}
	}
	return "", invalid("%s.failureType %q is not one of Failed, TimedOut, DeviceNotOnline, Any", name, s)
}

// parseList reads an array of 1 to maxN criteria, each with parse (named
// name[i] in errors).
func parseList[T any](raw json.RawMessage, name string, maxN int, parse func(json.RawMessage, string) (T, error)) ([]T, error) {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil, invalid("%s must be an array, not %s", name, raw)
	}
	if len(list) == 0 || len(list) > maxN {
		return nil, invalid("%s must hold from 1 to %d criteria, not %d", name, maxN, len(list))
	}
	out := make([]T, len(list))
	for i, c := range list {
		var err error
		if out[i], err = parse(c, fmt.Sprintf("%s[%d]", name, i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// EncodeOptions is the stored form of a job's herd options ("" for none).
func EncodeOptions(o *herd.JobOptions) string {
	if o == nil {
		return ""
	}
	b, _ := json.Marshal(o)
	return string(b)
}

// DecodeOptions reads the stored form of a job's herd options.
func DecodeOptions(s string) (*herd.JobOptions, error) {
	if s == "" {
		return nil, nil
	}
	var o herd.JobOptions
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		return nil, err
	}
	return &o, nil
}
