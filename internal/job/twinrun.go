package job

import (
	"context"
	"fmt"
)

// runTwin works through a twin-update job's pending devices in batches:
// each batch patches its twins and completes their records in one store
// transaction (so a crash never applies a patch twice); connected devices
// are told about desired changes after the commit. It stops when no
// pending device is left or feed ends (cancel, deadline, shutdown).
func (s *Service) runTwin(feed context.Context, r *Record) error {
	p, err := Patch(r)
	if err != nil {
		return fmt.Errorf("twin job %q: %w", r.JobID, err)
	}
	body, err := p.NotificationBody()
	if err != nil {
		return fmt.Errorf("twin job %q: %w", r.JobID, err)
	}
	cursor := ""
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
			return err
		}
		s.metrics.devices.WithLabelValues(string(r.Type), "succeeded").Add(float64(len(res.Updated)))
		s.metrics.devices.WithLabelValues(string(r.Type), "failed").Add(float64(res.Failed))
		s.notify(body, res.Updated)
		if res.Done {
			return nil
		}
		cursor = res.Next
	}
}
