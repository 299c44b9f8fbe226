package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/batch"
	"github.com/herd-iot/herd/internal/bus"
)

// SessionChange is a change to a device's persistent session (the type
// lives in bus so that stores implement SessionStore without importing the
// gateway).
type SessionChange = bus.SessionChange

// SessionStore keeps persistent sessions (§8.3) across reconnects and hub
// restarts.
type SessionStore interface {
	// Session returns a device's stored subscription set; found is false
	// when the device has no session.
	Session(ctx context.Context, deviceID string) (subs bus.Feature, found bool, err error)
	// Sessions reads the sessions of many devices (not modules) at once:
	// the subscription sets of those that have one.
	Sessions(ctx context.Context, deviceIDs []string) (map[string]bus.Feature, error)
	// SaveSessions applies a batch of changes in one transaction. Changes
	// for devices that no longer exist are ignored.
	SaveSessions(ctx context.Context, changes []SessionChange) error
}

// sessionFlushEvery is how often session changes are written.
const sessionFlushEvery = 100 * time.Millisecond

// Session lookups read together: at most this many in one read, each read
// bounded by the timeout.
const (
	maxSessionBatch    = 512
	sessionReadTimeout = 10 * time.Second
)

// sessions batches session writes: changes are visible to load at once
// and reach the store with the next flush (and at shutdown), so that a
// connect storm does not write one row per SUBSCRIBE. It also remembers
// the sessions it has seen (a few dozen bytes per device), so that a
// reconnect does not read the store; the registry's change notification
// forgets a device's entry (a deleted device's session goes with it).
type sessions struct {
	store SessionStore
	// reads gathers the session lookups of a connect burst that known
	// missed into one store read.
	reads   *batch.Loader[string, bus.Feature]
	mu      sync.Mutex
	pending map[string]SessionChange
	known   map[string]knownSession
	// moduleKnown lists the module identities in known, by device, so
	// that forgetting a device (deleted with its modules) forgets them.
	moduleKnown map[string]map[string]struct{}
	// owners is the connection that owns each connected device's session:
	// a connection that was taken over may still be handling a SUBSCRIBE,
	// and its late save must not overwrite (or resurrect) the session of
	// the connection that replaced it.
	owners map[string]*conn
}

type knownSession struct {
	subs    bus.Feature
	present bool
}

func newSessions(store SessionStore) *sessions {
	fetch := func(ctx context.Context, ids []string) (map[string]bus.Feature, error) {
		return store.Sessions(ctx, ids)
	}
	return &sessions{store: store, reads: batch.New(fetch, maxSessionBatch, sessionReadTimeout), pending: map[string]SessionChange{},
		known: map[string]knownSession{}, moduleKnown: map[string]map[string]struct{}{}, owners: map[string]*conn{}}
}

// claim makes c the owner of the device's session; later saves from any
// other connection are ignored.
func (s *sessions) claim(id string, c *conn) {
	s.mu.Lock()
	s.owners[id] = c
	s.mu.Unlock()
}

// release ends c's ownership, if it still owns the session.
func (s *sessions) release(id string, c *conn) {
	s.mu.Lock()
	if s.owners[id] == c {
		delete(s.owners, id)
	}
	s.mu.Unlock()
}

// save records c's new subscription set, if c owns the session.
func (s *sessions) save(id string, subs bus.Feature, c *conn) {
	s.mu.Lock()
	if s.owners[id] != c {
		s.mu.Unlock()
		return
	}
	s.pending[id] = SessionChange{DeviceID: id, Subscriptions: subs}
	s.remember(id, knownSession{subs, true})
	s.mu.Unlock()
}

func (s *sessions) discard(id string) {
	s.mu.Lock()
	if k, ok := s.known[id]; !ok || k.present {
		s.pending[id] = SessionChange{DeviceID: id, Delete: true}
	}
	s.remember(id, knownSession{})
	s.mu.Unlock()
}

// remember records what is known of a session (under s.mu).
func (s *sessions) remember(id string, k knownSession) {
	s.known[id] = k
	if dev, mod := herd.SplitIdentity(id); mod != "" {
		if s.moduleKnown[dev] == nil {
			s.moduleKnown[dev] = map[string]struct{}{}
		}
		s.moduleKnown[dev][id] = struct{}{}
	}
}

// forget drops what is remembered about a device's session (and, for a
// device, its modules' sessions, which go with it) or a module's.
func (s *sessions) forget(id string) {
	s.mu.Lock()
	delete(s.known, id)
	if dev, mod := herd.SplitIdentity(id); mod != "" {
		delete(s.moduleKnown[dev], id)
	} else {
		for m := range s.moduleKnown[id] {
			delete(s.known, m)
		}
		delete(s.moduleKnown, id)
	}
	s.mu.Unlock()
}

func (s *sessions) load(ctx context.Context, id string) (bus.Feature, bool, error) {
	s.mu.Lock()
	k, ok := s.known[id]
	s.mu.Unlock()
	if ok {
		return k.subs, k.present, nil
	}
	var subs bus.Feature
	var present bool
	var err error
	if _, mod := herd.SplitIdentity(id); mod != "" {
		subs, present, err = s.store.Session(ctx, id)
	} else {
		subs, present, err = s.reads.Load(ctx, id)
	}
	if err != nil {
		return 0, false, err
	}
	s.mu.Lock()
	if _, changed := s.known[id]; !changed {
		s.remember(id, knownSession{subs, present})
	}
	s.mu.Unlock()
	return subs, present, nil
}

func (s *sessions) flush(ctx context.Context) error {
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.mu.Unlock()
		return nil
	}
	batch := make([]SessionChange, 0, len(s.pending))
	for _, c := range s.pending {
		batch = append(batch, c)
	}
	s.mu.Unlock()
	if err := s.store.SaveSessions(ctx, batch); err != nil {
		return err
	}
	// Forget what was written unless it changed again meanwhile.
	s.mu.Lock()
	for _, c := range batch {
		if s.pending[c.DeviceID] == c {
			delete(s.pending, c.DeviceID)
		}
	}
	s.mu.Unlock()
	return nil
}

func (s *sessions) run(ctx context.Context, log *slog.Logger) error {
	t := time.NewTicker(sessionFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.flush(ctx); err != nil {
				log.Error("save device sessions", "err", err)
			}
		}
	}
}
