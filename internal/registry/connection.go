package registry

import (
	"context"
	"time"

	"github.com/herd-iot/herd"
)

// flushInterval is how often recorded connection changes are written.
const flushInterval = time.Second

// RecordConnection notes that a device connected or disconnected. The
// change reaches the store with the next batch.
func (s *Service) RecordConnection(id string, state herd.ConnectionState, at time.Time) {
	s.connMu.Lock()
	c := s.pending[id]
	c.DeviceID, c.State, c.StateAt = id, state, at
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
	c.DeviceID = id
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
	batch := make([]ConnectionChange, 0, len(s.pending))
	for _, c := range s.pending {
		batch = append(batch, c)
	}
	s.pending = make(map[string]ConnectionChange, len(batch))
	s.connMu.Unlock()
	return s.store.SetConnectionStates(ctx, batch)
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
			if err := s.Flush(ctx); err != nil {
				s.log.Error("record connection states", "err", err)
			}
		}
	}
}
