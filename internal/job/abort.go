package job

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/herd-iot/herd"
)

// aborter checks a running job's outcomes against its abort criteria
// (herd.abort) as they are recorded, and aborts the job when one fires: the
// store cancels the pending devices and fails the job with the reason once
// the devices in flight finish, and the runner stops feeding devices.
//
// The counts start from the store's (FailureCounts), so a job resumed after
// a restart or a pause counts every outcome it already had; then each
// committed batch of outcomes adds to them in memory, classified as the
// store classifies them. A nil *aborter checks nothing.
type aborter struct {
	s        *Service
	jobID    string
	criteria []herd.AbortCriterion
	stop     func(cause error)

	mu     sync.Mutex
	counts FailureCounts
	fired  bool
}

// errAborted stops a runner whose abort criterion fired.
var errAborted = errors.New("job aborted")

// newAborter returns the aborter of a job (nil if it has no abort
// criteria), after checking the counts it already has: it may have been
// stopped between recording the outcome that crosses a threshold and
// aborting.
func (s *Service) newAborter(ctx context.Context, r *Record, stop func(error)) (*aborter, error) {
	if r.Herd == nil || r.Herd.Abort == nil || len(r.Herd.Abort.Criteria) == 0 {
		return nil, nil
	}
	c, err := s.store.FailureCounts(ctx, r.JobID)
	if err != nil {
		return nil, err
	}
	a := &aborter{s: s, jobID: r.JobID, criteria: r.Herd.Abort.Criteria, stop: stop, counts: c}
	return a, a.check(ctx, FailureCounts{}, nil)
}

// outcomes counts a batch of method outcomes before it is recorded, so
// that the batch that crosses a threshold aborts the job while its devices
// still run: the job then ends failed when they are recorded, even if they
// were its last. The batch's devices that fail from pending (offline ones)
// are claimed first, so that the abort, which cancels pending devices,
// leaves them to their outcome; those outcomes are changed to move from
// running.
func (a *aborter) outcomes(ctx context.Context, batch []Outcome) error {
	if a == nil {
		return nil
	}
	var d FailureCounts
	for _, o := range batch {
		d = d.add(classify(o))
	}
	return a.check(ctx, d, func() error {
		var ids []string
		for _, o := range batch {
			if o.FromPending {
				ids = append(ids, o.DeviceID)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		claimed, err := a.s.store.ClaimDevices(context.WithoutCancel(ctx), a.jobID, ids, a.s.clock.Now())
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
func (a *aborter) twins(ctx context.Context, res TwinBatchResult) error {
	if a == nil {
		return nil
	}
	n := int64(res.Failed)
	return a.check(ctx, FailureCounts{Executed: int64(len(res.Updated)) + n, Failed: n}, nil)
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

// check adds d to the counts and aborts the job if a criterion fires,
// after calling before (if not nil). The store refuses nothing here: a job
// that ended or is ending meanwhile is left as it is.
func (a *aborter) check(ctx context.Context, d FailureCounts, before func() error) error {
	a.mu.Lock()
	a.counts = a.counts.add(d)
	if a.fired {
		a.mu.Unlock()
		return nil
	}
	c := a.counts
	var reason string
	for _, k := range a.criteria {
		if fires(k, c) {
			reason = abortReason(k, c)
			break
		}
	}
	if reason == "" {
		a.mu.Unlock()
		return nil
	}
	a.fired = true
	a.mu.Unlock()
	var err error
	if before != nil {
		err = before()
	}
	var r *Record
	if err == nil {
		r, err = a.s.store.AbortJob(context.WithoutCancel(ctx), a.jobID, reason, a.s.clock.Now())
	}
	if err != nil {
		a.mu.Lock()
		a.fired = false // checked again with the next batch, or the next run
		a.mu.Unlock()
		return err
	}
	a.stop(errAborted)
	if r.Status == herd.JobFailed {
		a.s.log.Warn("job aborted", "job_id", a.jobID, "reason", reason)
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
