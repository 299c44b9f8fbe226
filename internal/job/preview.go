package job

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/herd-iot/herd"
)

// Targets answers, without writing anything, which devices a
// queryCondition selects now: the query service in a hub (POST
// /devices/query with COUNT() and a page of device ids).
type Targets interface {
	// CountTargets counts the devices the condition selects ("*": every
	// device) and those of them connected now.
	CountTargets(ctx context.Context, queryCondition string) (total, connected int64, err error)
	// SampleTargets returns up to n ids of devices the condition selects,
	// in device id order.
	SampleTargets(ctx context.Context, queryCondition string, n int) ([]string, error)
}

// Preview sizes of POST /jobs/v2/preview?sample=N.
const (
	DefaultPreviewSample = 10
	MaxPreviewSample     = 100
)

// Throughputs the duration estimate assumes, from docs/benchmarks.md on
// the 2-core reference machine, rounded down: a twin-update job patched
// 87,900 twins/s over 1,000,000 devices (SQLite); a method job ran
// 29,000–31,000 devices/s over 10,000 devices answering at once over MQTT.
const (
	estimateTwinRate   = 80000.0
	estimateMethodRate = 25000.0
)

// Preview is what a job would do if it were created now (POST
// /jobs/v2/preview); the type is the SDK's, herd.JobPreview.
type Preview = herd.JobPreview

// Preview validates a job body exactly as Create does (the id is
// optional; none is stored) and reports the devices its condition selects
// now, sample of them at most (0: DefaultPreviewSample; capped at
// MaxPreviewSample), and an estimate of its duration (docs/jobs.md,
// "Preview"). allow is asked as for Create.
func (s *Service) Preview(ctx context.Context, body []byte, sample int, allow Allow) (*Preview, error) {
	if s.cfg.Targets == nil {
		return nil, herd.Errorf(herd.ErrInternal, "job preview is not available on this hub")
	}
	id, err := previewID(body)
	if err != nil {
		return nil, err
	}
	pathID := id
	if pathID == "" {
		pathID = "preview"
	}
	r, err := ParseRequest(pathID, body, s.clock.Now())
	if err != nil {
		return nil, err
	}
	if allow != nil {
		if err := allow(r.Type); err != nil {
			return nil, err
		}
	}
	if _, err := parseWhere(r.QueryCondition); err != nil {
		return nil, herd.Errorf(herd.ErrArgumentInvalid, "queryCondition %q is not valid: %s", r.QueryCondition, herd.ErrorMessage(err))
	}
	if sample <= 0 {
		sample = DefaultPreviewSample
	}
	sample = min(sample, MaxPreviewSample)
	total, connected, err := s.cfg.Targets.CountTargets(ctx, r.QueryCondition)
	if err != nil {
		return nil, fmt.Errorf("count the job's devices: %w", err)
	}
	ids, err := s.cfg.Targets.SampleTargets(ctx, r.QueryCondition, sample)
	if err != nil {
		return nil, fmt.Errorf("sample the job's devices: %w", err)
	}
	if ids == nil {
		ids = []string{}
	}
	p := &Preview{
		JobID: id, Type: r.Type, QueryCondition: r.QueryCondition, StartTime: r.StartTime,
		MaxExecutionTimeInSeconds: r.MaxExecutionTimeInSeconds,
		DeviceCount:               total, ConnectedCount: connected, DisconnectedCount: total - connected,
		SampleDeviceIDs: ids,
	}
	s.estimate(p, r)
	start := r.StartTime.Time
	if now := s.clock.Now(); start.Before(now) {
		start = now
	}
	p.EstimatedEndTime = herd.NewTime(start.Add(seconds(p.EstimatedDurationInSeconds)))
	return p, nil
}

// previewID reads the optional jobId of a preview body ("" when absent).
func previewID(body []byte) (string, error) {
	var req struct {
		JobID json.RawMessage `json:"jobId"`
	}
	if len(bytes.TrimSpace(body)) == 0 || json.Unmarshal(body, &req) != nil || isNull(req.JobID) {
		return "", nil // ParseRequest gives the error of a bad body
	}
	id, err := idString(req.JobID)
	if err != nil {
		return "", err
	}
	return id, ValidateJobID(id)
}

// estimate fills the duration estimate with the model of docs/jobs.md:
//
//   - twin job: deviceCount / estimateTwinRate (devices need not be
//     online; batches of TwinBatch twins per transaction);
//   - method job, expected: connected devices at estimateMethodRate, and
//     with a connect timeout the disconnected ones are waited for that
//     long (they may come online);
//   - method job, worst case: connected devices in rounds of MaxInFlight
//     each waiting its whole responseTimeoutInSeconds, or the connect
//     timeout plus one response timeout for disconnected ones;
//
// each capped by maxExecutionTimeInSeconds.
func (s *Service) estimate(p *Preview, r *Record) {
	deadline := float64(r.MaxExecutionTimeInSeconds)
	var expected, worst float64
	switch r.Type {
	case herd.JobUpdateTwin:
		expected = float64(p.DeviceCount) / estimateTwinRate
		worst = expected
		p.Estimate = fmt.Sprintf("twin job: %d devices at about %.0f twins/s (measured, docs/benchmarks.md), online or not",
			p.DeviceCount, estimateTwinRate)
	case herd.JobDeviceMethod:
		m := r.CloudToDeviceMethod
		response := float64(m.ResponseTimeoutInSeconds)
		if response == 0 {
			response = 30
		}
		connect := float64(m.ConnectTimeoutInSeconds)
		expected = float64(p.ConnectedCount) / estimateMethodRate
		rounds := math.Ceil(float64(p.ConnectedCount) / float64(s.cfg.MaxInFlight))
		worst = rounds * response
		if p.DisconnectedCount > 0 && connect > 0 {
			expected = max(expected, connect)
			worst = max(worst, connect+response)
		}
		offline := "fail at once (connectTimeoutInSeconds 0)"
		if connect > 0 {
			offline = fmt.Sprintf("are waited for up to %.0f s", connect)
		}
		p.Estimate = fmt.Sprintf("method job: %d connected devices at about %.0f calls/s if they answer at once (measured, docs/benchmarks.md), "+
			"at worst %.0f round(s) of up to %d calls in flight each taking the %.0f s response timeout; %d disconnected devices %s",
			p.ConnectedCount, estimateMethodRate, rounds, s.cfg.MaxInFlight, response, p.DisconnectedCount, offline)
	}
	if ro := rolloutOf(r); ro != nil && (ro.MaxPerMinute > 0 || ro.Exponential != nil) {
		paced := rolloutSeconds(*r.Herd.Rollout, p.DeviceCount)
		expected, worst = max(expected, paced), max(worst, paced)
		p.Estimate += fmt.Sprintf("; the rollout's pace starts the %d devices in about %.0f s (every device succeeding)", p.DeviceCount, paced)
	}
	p.EstimatedDurationInSeconds = roundSeconds(min(expected, deadline))
	p.MaxDurationInSeconds = roundSeconds(min(worst, deadline))
	if worst > deadline {
		p.Estimate += fmt.Sprintf("; the deadline (maxExecutionTimeInSeconds %d) may end it first", r.MaxExecutionTimeInSeconds)
	}
}

// rolloutSeconds is how long a rollout takes to start n devices if every
// device succeeds as it starts: the first second's worth at once, then the
// rest at the rate, which an exponential rollout raises with each step of
// succeeded devices (pacer).
func rolloutSeconds(ro herd.Rollout, n int64) float64 {
	started := min(n, int64(burst(perMinute(ro, 0))))
	left := float64(n - started)
	var took float64
	for i := 0; left > 0; i++ {
		rate := perMinute(ro, started) / 60
		step := left
		if e := ro.Exponential; e != nil && i < 10000 && rate < perMinute(ro, math.MaxInt64/2)/60 {
			next := (started/e.RateIncreaseCriteria.NumberOfSucceededDevices + 1) * e.RateIncreaseCriteria.NumberOfSucceededDevices
			step = min(left, float64(next-started))
		}
		took += step / rate
		left -= step
		started += int64(step)
	}
	return took
}

// roundSeconds rounds up to milliseconds.
func roundSeconds(v float64) float64 { return math.Ceil(v*1000) / 1000 }

func seconds(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
