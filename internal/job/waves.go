package job

import (
	"context"
	"fmt"
	"math"

	"github.com/herd-iot/herd"
)

// waveEnds returns, for a job of n devices, how many devices have started
// by the end of each wave of its rollout (cumulative, the last n). A wave
// that rounds to no device of its own at this size is left out, so the
// waves a job runs depend only on its device count, fixed when it starts.
func waveEnds(ro *herd.Rollout, n int64) []int64 {
	var ends []int64
	if ro != nil {
		for _, w := range ro.Waves {
			// Rounded up, less a hair of float error: 1% of 10,000 is 100.
			end := int64(math.Ceil(w.Percent*float64(n)/100 - 1e-9))
			if end >= n {
				break
			}
			if end <= 0 || len(ends) > 0 && end <= ends[len(ends)-1] {
				continue
			}
			ends = append(ends, end)
		}
	}
	return append(ends, n)
}

func rolloutOf(r *Record) *herd.Rollout {
	if r.Herd == nil {
		return nil
	}
	return r.Herd.Rollout
}

// herdStatus is the rollout state GET shows for a job with waves (nil
// without).
func herdStatus(r *Record) *herd.JobHerdStatus {
	ro := rolloutOf(r)
	if ro == nil || len(ro.Waves) == 0 || r.DeviceJobStatistics == nil || r.Started.IsZero() {
		return nil
	}
	ends := waveEnds(ro, r.DeviceJobStatistics.DeviceCount)
	return &herd.JobHerdStatus{Wave: min(r.Wave, len(ends)-1) + 1, Waves: len(ends)}
}

// runWaves runs a started job through the waves of its rollout: run starts
// at most limit devices (-1: all that are pending) and returns once those
// it started have finished. After each wave but the last, the job's wave
// moves on (AdvanceWave, in the store, so that a restart resumes at the
// right wave), pausing it when the rollout pauses between waves; a job
// without waves is one run.
func (s *Service) runWaves(ctx context.Context, run *runner, r *Record, runOnce func(limit int64) error) error {
	ro := rolloutOf(r)
	if ro == nil || len(ro.Waves) == 0 {
		return runOnce(-1)
	}
	ends := waveEnds(ro, r.DeviceJobStatistics.DeviceCount)
	for {
		st := r.DeviceJobStatistics
		if r.Wave >= len(ends)-1 {
			return runOnce(-1) // the last wave
		}
		started, retrying, err := s.started(ctx, r)
		if err != nil {
			return err
		}
		// A wave is done when its devices are started and none waits for
		// a retry (after a restart, some may).
		if left := ends[r.Wave] - started; left > 0 && st.PendingCount > 0 || retrying > 0 {
			if err := runOnce(max(left, 0)); err != nil || run.feed.Err() != nil {
				return err
			}
			if r, err = s.store.Job(ctx, r.JobID); err != nil {
				return err
			}
			st = r.DeviceJobStatistics
			if r.EndTime != nil || r.Status != herd.JobRunning {
				return nil
			}
			now, retrying, err := s.started(ctx, r)
			if err != nil {
				return err
			}
			if now < ends[r.Wave] && st.PendingCount > 0 || retrying > 0 {
				if now == started {
					// Nothing started: a store error shows as one, so that
					// the engine tries again after a pause, not in a loop.
					return fmt.Errorf("wave %d of job %q started no device", r.Wave+1, r.JobID)
				}
				continue // some devices were not started: go on with the wave
			}
		}
		next, err := s.store.AdvanceWave(context.WithoutCancel(ctx), r.JobID, r.Wave+1, ro.PauseBetweenWaves, s.clock.Now())
		if err != nil {
			return err
		}
		s.log.Info("job wave done", "job_id", r.JobID, "wave", r.Wave+1, "waves", len(ends),
			"started", started, "paused", next.Status == herd.JobPaused)
		if next.Status != herd.JobRunning || next.EndTime != nil {
			return nil // paused between waves, or cancelled meanwhile
		}
		r = next
	}
}

// started counts the devices of a job that have started: those no longer
// pending, and pending ones waiting for a retry (herd.retry), which it
// also returns.
func (s *Service) started(ctx context.Context, r *Record) (started, retrying int64, err error) {
	st := r.DeviceJobStatistics
	started = st.DeviceCount - st.PendingCount
	if r.Herd == nil || r.Herd.Retry == nil {
		return started, 0, nil
	}
	rs, err := s.store.Retries(ctx, r.JobID)
	return started + rs.Retrying, rs.Retrying, err
}
