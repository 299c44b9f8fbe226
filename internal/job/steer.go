package job

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/herd-iot/herd"
)

// steer applies a running job's herd options. It paces the devices the
// job starts (herd.rollout, see pacer) and checks the job's outcomes
// against its abort criteria (herd.abort) as they are recorded, aborting
// the job when one fires: the store cancels the pending devices and fails
// the job with the reason once the devices in flight finish, and the
// runner stops feeding devices.
//
// The counts start from the store's (FailureCounts), so a job resumed after
// a restart or a pause counts every outcome it already had (and an
// exponential rollout goes on at the rate it had reached); then each batch
// of outcomes adds to them in memory, classified as the store classifies
// them. A nil *steer paces and checks nothing.
type steer struct {
	s        *Service
	jobID    string
	criteria []herd.AbortCriterion
	pace     *pacer // nil: not paced
	stop     func(cause error)

	mu     sync.Mutex
	counts FailureCounts
	fired  bool
}

// errAborted stops a runner whose abort criterion fired.
var errAborted = errors.New("job aborted")

// newSteer returns the steer of a job (nil if it is neither paced nor has
// abort criteria; waves are the engine's wave loop, runWaves), after
// checking the counts it already has: it may have been stopped between
// recording the outcome that crosses a threshold and aborting.
func (s *Service) newSteer(ctx context.Context, r *Record, stop func(error)) (*steer, error) {
	var criteria []herd.AbortCriterion
	var ro *herd.Rollout
	if o := r.Herd; o != nil {
		if o.Abort != nil {
			criteria = o.Abort.Criteria
		}
		if o.Rollout != nil && (o.Rollout.MaxPerMinute > 0 || o.Rollout.Exponential != nil) {
			ro = o.Rollout
		}
	}
	if ro == nil && len(criteria) == 0 {
		return nil, nil
	}
	c, err := s.store.FailureCounts(ctx, r.JobID)
	if err != nil {
		return nil, err
	}
	st := &steer{s: s, jobID: r.JobID, criteria: criteria, stop: stop, counts: c}
	if ro != nil {
		st.pace = newPacer(s.clock, *ro, c.succeeded())
	}
	return st, st.check(ctx, FailureCounts{}, nil)
}

// succeeded counts the executed devices that did not fail.
func (c FailureCounts) succeeded() int64 { return c.Executed - c.Of(herd.FailureAny) }

// batch returns how many devices to start at once, at most limit.
func (st *steer) batch(limit int) int {
	if st == nil || st.pace == nil {
		return limit
	}
	return st.pace.batch(limit)
}

// wait waits until n more devices may start; false if ctx ended first.
func (st *steer) wait(ctx context.Context, n int) bool {
	if st == nil || st.pace == nil {
		return true
	}
	return st.pace.wait(ctx, st.s, n)
}

// outcomes counts a batch of method outcomes before it is recorded, so
// that the batch that crosses a threshold aborts the job while its devices
// still run: the job then ends failed when they are recorded, even if they
// were its last. The batch's devices that fail from pending (offline ones)
// are claimed first, so that the abort, which cancels pending devices,
// leaves them to their outcome; those outcomes are changed to move from
// running.
func (st *steer) outcomes(ctx context.Context, batch []Outcome) error {
	if st == nil {
		return nil
	}
	var d FailureCounts
	for _, o := range batch {
		d = d.add(classify(o))
	}
	return st.check(ctx, d, func() error {
		var ids []string
		for _, o := range batch {
			if o.FromPending {
				ids = append(ids, o.DeviceID)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		claimed, err := st.s.store.ClaimDevices(context.WithoutCancel(ctx), st.jobID, ids, st.s.clock.Now())
		if errors.Is(err, ErrNotRunning) {
			return nil // paused meanwhile: the abort cancels them with the rest
		}
		if err != nil {
			return err
		}
		running := make(map[string]bool, len(claimed))
		for _, id := range claimed {
			running[id] = true
		}
		for i := range batch {
			if running[batch[i].DeviceID] {
				batch[i].FromPending = false
			}
		}
		return nil
	})
}

// twins counts a committed twin batch: its updated devices succeeded, its
// failed ones are Failed.
func (st *steer) twins(ctx context.Context, res TwinBatchResult) error {
	if st == nil {
		return nil
	}
	n := int64(res.Failed)
	return st.check(ctx, FailureCounts{Executed: int64(len(res.Updated)) + n, Failed: n}, nil)
}

func (c FailureCounts) add(d FailureCounts) FailureCounts {
	return FailureCounts{Executed: c.Executed + d.Executed, Failed: c.Failed + d.Failed,
		TimedOut: c.TimedOut + d.TimedOut, NotOnline: c.NotOnline + d.NotOnline}
}

// classify counts one outcome as FailureCounts does: completed and failed
// devices are executed; a failure is TimedOut (GatewayTimeout),
// DeviceNotOnline, or else Failed, and so is a method that answered with a
// status of 400 or more. Canceled devices do not count.
func classify(o Outcome) FailureCounts {
	if !o.RetryAt.IsZero() {
		return FailureCounts{} // not the device's outcome: it is tried again
	}
	switch o.Status {
	case herd.DeviceJobCompleted:
		if o.Response != nil && o.Response.Status >= 400 {
			return FailureCounts{Executed: 1, Failed: 1}
		}
		return FailureCounts{Executed: 1}
	case herd.DeviceJobFailed:
		code := ""
		if o.Error != nil {
			code = o.Error.Code
		}
		switch herd.ErrorCode(code) {
		case herd.ErrGatewayTimeout:
			return FailureCounts{Executed: 1, TimedOut: 1}
		case herd.ErrDeviceNotOnline:
			return FailureCounts{Executed: 1, NotOnline: 1}
		}
		return FailureCounts{Executed: 1, Failed: 1}
	}
	return FailureCounts{}
}

// failureType is the type of the one failure c counts ("" for none).
func (c FailureCounts) failureType() herd.FailureType {
	switch {
	case c.Failed > 0:
		return herd.FailureFailed
	case c.TimedOut > 0:
		return herd.FailureTimedOut
	case c.NotOnline > 0:
		return herd.FailureNotOnline
	}
	return ""
}

// check adds d to the counts and aborts the job if a criterion fires,
// after calling before (if not nil). The store refuses nothing here: a job
// that ended or is ending meanwhile is left as it is.
func (st *steer) check(ctx context.Context, d FailureCounts, before func() error) error {
	st.mu.Lock()
	st.counts = st.counts.add(d)
	if st.pace != nil {
		st.pace.succeeded(st.counts.succeeded())
	}
	if st.fired {
		st.mu.Unlock()
		return nil
	}
	c := st.counts
	var reason string
	for _, k := range st.criteria {
		if fires(k, c) {
			reason = abortReason(k, c)
			break
		}
	}
	if reason == "" {
		st.mu.Unlock()
		return nil
	}
	st.fired = true
	st.mu.Unlock()
	var err error
	if before != nil {
		err = before()
	}
	var r *Record
	if err == nil {
		r, err = st.s.store.AbortJob(context.WithoutCancel(ctx), st.jobID, reason, st.s.clock.Now())
	}
	if err != nil {
		st.mu.Lock()
		st.fired = false // checked again with the next batch, or the next run
		st.mu.Unlock()
		return err
	}
	st.stop(errAborted)
	if r.Status == herd.JobFailed {
		st.s.log.Warn("job aborted", "job_id", st.jobID, "reason", reason)
	}
	return nil
}

// fires says whether a criterion holds for the counts: at least
// MinExecutedDevices executed, and the failures of its type at least
// ThresholdPercentage of them.
func fires(k herd.AbortCriterion, c FailureCounts) bool {
	if c.Executed == 0 || c.Executed < k.MinExecutedDevices {
		return false
	}
	return float64(c.Of(k.FailureType))*100 >= k.ThresholdPercentage*float64(c.Executed)
}

func abortReason(k herd.AbortCriterion, c FailureCounts) string {
	what := "failed"
	switch k.FailureType {
	case herd.FailureTimedOut:
		what = "timed out"
	case herd.FailureNotOnline:
		what = "were not online"
	case herd.FailureAny:
		what = "failed in any way"
	}
	n := c.Of(k.FailureType)
	return fmt.Sprintf("The job was aborted by its abort criterion (failureType %s, thresholdPercentage %s, minExecutedDevices %d): "+
		"%d of the %d devices executed (%s%%) %s.", k.FailureType, strconv.FormatFloat(k.ThresholdPercentage, 'f', -1, 64),
		k.MinExecutedDevices, n, c.Executed, strconv.FormatFloat(float64(n)*100/float64(c.Executed), 'f', 1, 64), what)
}
