package registry

import (
	"context"
	"time"

	"github.com/herd-iot/herd"
)

// flushInterval is how often recorded connection changes are written.
const flushInterval = time.Second

// RecordConnection notes that a device connected to this node or
// disconnected from it, on a connection with epoch (see
// ConnectionChange; 0 on a node alone). The change reaches the store with
// the next batch.
func (s *Service) RecordConnection(id string, state herd.ConnectionState, at time.Time, epoch int64) {
	s.connMu.Lock()
	c := s.pending[id]
	c.DeviceID, c.Node, c.State, c.StateAt, c.Epoch = id, s.node, state, at, epoch
	if at.After(c.ActivityAt) {
		c.ActivityAt = at
	}
	s.pending[id] = c
	s.connMu.Unlock()
}

// RecordActivity notes that a device did something (sent a packet).
func (s *Service) RecordActivity(id string, at time.Time) {
	s.connMu.Lock()
	c := s.pending[id]
	c.DeviceID, c.Node = id, s.node
	if at.After(c.ActivityAt) {
		c.ActivityAt = at
	}
	s.pending[id] = c
	s.connMu.Unlock()
}

// Flush writes the recorded connection changes now.
func (s *Service) Flush(ctx context.Context) error {
	s.connMu.Lock()
	if len(s.pending) == 0 {
		s.connMu.Unlock()
		return nil
	}
	// Reads keep seeing the batch through s.flushing until it is stored.
	s.flushing, s.pending = s.pending, make(map[string]ConnectionChange, len(s.pending))
	batch := make([]ConnectionChange, 0, len(s.flushing))
	for _, c := range s.flushing {
		batch = append(batch, c)
	}
	s.connMu.Unlock()
	err := s.store.SetConnectionStates(ctx, batch)
	s.connMu.Lock()
	if err != nil {
		// Keep the batch for the next flush, under anything newer.
		for id, c := range s.flushing {
			if _, newer := s.pending[id]; !newer {
				s.pending[id] = c
			}
		}
	}
	s.flushing = nil
	s.connMu.Unlock()
	return err
}

// live returns the recorded but not yet stored connection change of a
// device, if any.
func (s *Service) live(id string) (ConnectionChange, bool) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if c, ok := s.pending[id]; ok {
		if f, ok := s.flushing[id]; ok && c.State == "" {
			// An activity-only change on top of a state change in flight.
			f.ActivityAt = later(f.ActivityAt, c.ActivityAt)
			return f, true
		}
		return c, true
	}
	c, ok := s.flushing[id]
	return c, ok
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// overlay brings a device read from the store up to date with connection
// changes not yet written, so that reads never lag the batch.
func (s *Service) overlay(d *herd.Device) {
	c, ok := s.live(d.DeviceID)
	if !ok {
		return
	}
	if c.State != "" {
		d.ConnectionState = c.State
		d.ConnectionStateUpdatedTime = herd.NewTime(c.StateAt)
	}
	if c.ActivityAt.After(d.LastActivityTime.Time) {
		d.LastActivityTime = herd.NewTime(c.ActivityAt)
	}
}

// OverlayTwin brings a twin's connection state and last activity up to
// date with changes not yet written.
func (s *Service) OverlayTwin(t *herd.Twin) {
	d := herd.Device{DeviceID: t.DeviceID, ConnectionState: t.ConnectionState, LastActivityTime: t.LastActivityTime}
	s.overlay(&d)
	t.ConnectionState, t.LastActivityTime = d.ConnectionState, d.LastActivityTime
}

// Run writes recorded connection changes every second until ctx ends, then
// once more.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return s.Flush(final)
		case <-t.C:
			// A flush cut short by shutdown keeps its batch for the final
			// flush above; only other failures are worth a log line.
			if err := s.Flush(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("record connection states", "err", err)
			}
		}
	}
}
