package job

import (
	"context"
	"fmt"
	"time"

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
func (s *Service) runTwin(ctx, feed context.Context, r *Record) error {
	p, err := Patch(r)
	if err == nil {
		var body func(int64) []byte
		if body, err = p.NotificationBody(); err == nil {
			return s.twinBatches(feed, r, p, body)
		}
	}
	// A stored patch that no longer passes validation (a job stored by an
	// older Herd): every attempt would fail the same way, so the job and
	// its devices fail now (ExpireJob ends a running job that way).
	reason := fmt.Sprintf("The job's updateTwin cannot be applied: %s", herd.ErrorMessage(err))
	return s.store.ExpireJob(ctx, r.JobID, reason, herd.DeviceJobError{Code: ErrCodeTwinWrite, Description: reason}, s.clock.Now())
}

func (s *Service) twinBatches(feed context.Context, r *Record, p twin.Patch, body func(int64) []byte) error {
	cursor := ""
	var failed error // the error of the last attempt at the batch at cursor
	for {
		n, err := s.slots.acquire(feed, r.JobID, s.cfg.TwinBatch)
		if err != nil {
			return nil // feed ended
		}
		res, err := s.store.ApplyTwinBatch(feed, r.JobID, p, cursor, n, s.clock.Now())
		s.slots.release(n)
		if err != nil {
			if feed.Err() != nil {
				return nil // the transaction rolled back; nothing was applied
			}
			if failed == nil || failed.Error() != err.Error() {
				failed = err
				s.log.Warn("twin batch failed; trying again", "job_id", r.JobID, "op", "twin_batch", "err", err)
				if !s.sleep(feed, retryPause) {
					return nil
				}
				continue
			}
			if res, err = s.twinOneByOne(feed, r, p, cursor, n); err != nil {
				if feed.Err() != nil {
					return nil
				}
				return err
			}
		}
		failed = nil
		s.metrics.devices.WithLabelValues(string(r.Type), "succeeded").Add(float64(len(res.Updated)))
		s.metrics.devices.WithLabelValues(string(r.Type), "failed").Add(float64(res.Failed))
		s.notify(body, res.Updated)
		if res.Done {
			return nil
		}
		cursor = res.Next
	}
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
