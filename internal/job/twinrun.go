package job

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/twin"
)

// runTwin works through a twin-update job's pending devices in batches:
// each batch patches its twins and completes their records in one store
// transaction (so a crash never applies a patch twice); connected devices
// are told about desired changes after the commit. It stops when no
// pending device is left or feed ends (cancel, deadline, shutdown).
//
// A batch that fails is tried again after retryPause; if it fails the same
// way twice, its devices are tried one by one and each that fails again is
// recorded failed (ErrCodeTwinWrite), so that a write the store refuses
// every time ends in device outcomes instead of retries until the deadline.
// limit bounds the devices patched (-1: every pending one), for a wave.
func (s *Service) runTwin(ctx, feed context.Context, r *Record, st *steer, limit int64) error {
	p, err := Patch(r)
	if err == nil {
		var body func(int64) []byte
		if body, err = p.NotificationBody(); err == nil {
			return s.twinBatches(feed, r, p, body, st, limit)
		}
	}
	// A stored patch that no longer passes validation (a job stored by an
	// older Herd): every attempt would fail the same way, so the job and
	// its devices fail now (ExpireJob ends a running job that way).
	reason := fmt.Sprintf("The job's updateTwin cannot be applied: %s", herd.ErrorMessage(err))
	return s.store.ExpireJob(ctx, r.JobID, herd.JobFailed, reason, herd.DeviceJobError{Code: ErrCodeTwinWrite, Description: reason}, s.clock.Now())
}

func (s *Service) twinBatches(feed context.Context, r *Record, p twin.Patch, body func(int64) []byte, st *steer, limit int64) error {
	if s.cfg.TwinWorkers > 1 {
		return s.twinBatchesConcurrent(feed, r, p, body, st, limit)
	}
	cursor := ""
	for {
		want := st.batch(s.cfg.TwinBatch)
		if limit >= 0 {
			if limit == 0 {
				return nil // the wave's devices are all patched
			}
			want = int(min(int64(want), limit))
		}
		if !st.wait(feed, want) {
			return nil // feed ended
		}
		n, err := s.slots.acquire(feed, r.JobID, want)
		if err != nil {
			return nil // feed ended
		}
		res, err := s.twinBatch(feed, r, p, cursor, n)
		s.slots.release(n)
		if errors.Is(err, ErrNotRunning) {
			// Paused (or cancelled) meanwhile: what the device-by-device
			// path applied before it noticed still counts.
			return s.twinBatchDone(feed, r, body, res, st)
		}
		if err != nil {
			if feed.Err() != nil {
				return nil // the transaction rolled back; nothing was applied
			}
			return err
		}
		if err := s.twinBatchDone(feed, r, body, res, st); err != nil {
			return err
		}
		if limit >= 0 {
			limit -= int64(len(res.Updated) + res.Failed)
		}
		if res.Done {
			return nil
		}
		cursor = res.Next
	}
}

// twinBatchesConcurrent keeps up to TwinWorkers batches of the job in
// flight at once, for stores that write several transactions at a time
// (TwinBatching). The batches cover consecutive ranges of the pending
// devices, each bounded before it is handed out (the device that ends its
// range is the n-th pending one after the previous bound), so they never
// overlap; each batch completes the job in its transaction if it is the
// last to commit. A range whose batch fails is tried again on its own, as
// the one-at-a-time loop does, while the others go on.
func (s *Service) twinBatchesConcurrent(feed context.Context, r *Record, p twin.Patch, body func(int64) []byte, st *steer, limit int64) error {
	g, ctx := errgroup.WithContext(feed)
	g.SetLimit(s.cfg.TwinWorkers)
	cursor := ""
	var err error
	for {
		want := st.batch(s.cfg.TwinBatch)
		if limit >= 0 {
			if limit == 0 {
				break // the wave's devices are all handed out
			}
			want = int(min(int64(want), limit))
		}
		if !st.wait(ctx, want) {
			break
		}
		n, aerr := s.slots.acquire(ctx, r.JobID, want)
		if aerr != nil {
			break // feed ended, or a batch failed
		}
		var ids []string
		if ids, err = s.store.PendingDevices(ctx, r.JobID, cursor, n); err != nil || len(ids) == 0 {
			s.slots.release(n)
			break
		}
		after := cursor
		cursor = ids[len(ids)-1]
		if limit >= 0 {
			limit -= int64(len(ids))
		}
		g.Go(func() error {
			defer s.slots.release(n)
			res, err := s.twinBatch(ctx, r, p, after, n)
			if errors.Is(err, ErrNotRunning) {
				return errors.Join(err, s.twinBatchDone(ctx, r, body, res, st))
			}
			if err != nil {
				return err
			}
			return s.twinBatchDone(ctx, r, body, res, st)
		})
		if len(ids) < n {
			break
		}
	}
	err = errors.Join(err, g.Wait())
	if feed.Err() != nil || errors.Is(err, ErrNotRunning) {
		return nil // what was in flight committed or rolled back whole
	}
	if err != nil {
		return err
	}
	if limit == 0 {
		return nil // a wave ends here; the job goes on
	}
	// No pending device is left after cursor: the batch there completes
	// the job if no batch did (a job resumed with nothing pending).
	res, err := s.twinBatch(feed, r, p, cursor, 1)
	switch {
	case err == nil:
		err = s.twinBatchDone(feed, r, body, res, st)
		if err != nil && feed.Err() == nil {
			return err
		}
	case feed.Err() == nil && !errors.Is(err, ErrNotRunning):
		return err
	}
	return nil
}

// twinBatch applies the batch of up to n pending devices after cursor. A
// batch that fails is tried again after retryPause; if it fails the same
// way twice, its devices are tried one by one (twinOneByOne). The error is
// feed's when it ended, else the store's.
func (s *Service) twinBatch(feed context.Context, r *Record, p twin.Patch, cursor string, n int) (TwinBatchResult, error) {
	var failed error // the error of the last attempt
	for {
		res, err := s.store.ApplyTwinBatch(feed, r.JobID, p, cursor, n, s.clock.Now())
		if err == nil {
			return res, nil
		}
		if feed.Err() != nil {
			return TwinBatchResult{}, feed.Err() // the transaction rolled back; nothing was applied
		}
		if errors.Is(err, ErrNotRunning) || errors.Is(err, ErrLeaseLost) {
			return TwinBatchResult{}, err
		}
		if failed != nil && failed.Error() == err.Error() {
			return s.twinOneByOne(feed, r, p, cursor, n)
		}
		failed = err
		s.log.Warn("twin batch failed; trying again", "job_id", r.JobID, "op", "twin_batch", "err", err)
		if !s.sleep(feed, retryPause) {
			return TwinBatchResult{}, feed.Err()
		}
	}
}

// twinBatchDone counts a committed batch's devices, tells the connected
// ones about their desired changes and checks the abort criteria (the
// error is the store's, if aborting failed).
func (s *Service) twinBatchDone(ctx context.Context, r *Record, body func(int64) []byte, res TwinBatchResult, st *steer) error {
	s.metrics.devices.WithLabelValues(string(r.Type), "succeeded").Add(float64(len(res.Updated)))
	s.metrics.devices.WithLabelValues(string(r.Type), "failed").Add(float64(res.Failed))
	s.notify(body, res.Updated)
	return st.twins(ctx, res)
}

// twinOneByOne patches the next limit pending devices after the cursor
// one per transaction, after their batch failed twice the same way; a
// device whose own write fails is recorded failed with the error.
func (s *Service) twinOneByOne(feed context.Context, r *Record, p twin.Patch, after string, limit int) (TwinBatchResult, error) {
	ids, err := s.store.PendingDevices(feed, r.JobID, after, limit)
	if err != nil {
		return TwinBatchResult{}, err
	}
	res := TwinBatchResult{Next: after, Done: len(ids) == 0}
	for _, id := range ids {
		one, err := s.store.ApplyTwinBatch(feed, r.JobID, p, res.Next, 1, s.clock.Now())
		switch {
		case err == nil:
			res.Updated = append(res.Updated, one.Updated...)
			res.Failed += one.Failed
		case feed.Err() != nil:
			return TwinBatchResult{}, feed.Err()
		case errors.Is(err, ErrNotRunning):
			return res, err // what was applied so far, for its notifications
		default:
			s.log.Warn("twin update failed twice; the device fails", "job_id", r.JobID, "device_id", id, "op", "twin_batch", "err", err)
			if err := s.store.FinishDevices(feed, r.JobID, []Outcome{{
				DeviceID: id, Status: herd.DeviceJobFailed, FromPending: true,
				Error: &herd.DeviceJobError{Code: ErrCodeTwinWrite, Description: "The twin update could not be stored (twice): " + herd.ErrorMessage(err)},
			}}, s.clock.Now()); err != nil {
				return TwinBatchResult{}, err
			}
			res.Failed++
		}
		res.Next = id
	}
	return res, nil
}

// sleep waits d on the service's clock; false if ctx ended first.
func (s *Service) sleep(ctx context.Context, d time.Duration) bool {
	done := make(chan struct{})
	t := s.clock.AfterFunc(d, func() { close(done) })
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
