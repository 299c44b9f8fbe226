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

// sessionFlushEvery is how often session changes nobody waits for (first
// sessions) are written, and how soon a failed write is tried again.
const sessionFlushEvery = 100 * time.Millisecond

// sessionSaveWait bounds how long a SUBSCRIBE or UNSUBSCRIBE waits for
// its session to be written before the connection is closed (and a
// clean-session CONNECT for the discard of a stored one before it is
// refused).
const sessionSaveWait = 10 * time.Second

// Session lookups read together: at most this many in one read, each read
// bounded by the timeout.
const (
	maxSessionBatch    = 512
	sessionReadTimeout = 10 * time.Second
)

// sessions keeps the persistent sessions of the devices connected here.
// A change to a stored session is written before its SUBACK (or
// UNSUBACK) is sent, so that a device told its subscription is in place
// never gets sessionPresent=1 without it, after a crash of this node or
// on another node (see save for a device's first session). The writes are
// group commits: a change waits for the write in progress, and the next
// write takes every change that arrived meanwhile; so is the discard of a
// stored session by a clean-session connect, before its CONNACK. First
// sessions are written within sessionFlushEvery. It also remembers the sessions it has seen (a few
// dozen bytes per device), so that a reconnect does not read the store;
// the registry's change notification forgets a device's entry (a deleted
// device's session goes with it), as does a connection of the device to
// another node.
type sessions struct {
	store SessionStore
	// reads gathers the session lookups of a connect burst that known
	// missed into one store read.
	reads   *batch.Loader[string, bus.Feature]
	mu      sync.Mutex
	pending map[string]pendingChange
	// seq numbers the changes made; the write in progress (or the last
	// one) took every change up to taken; every change up to written is
	// in the store, and advanced is closed (and replaced) when written
	// moves on.
	seq, taken, written uint64
	advanced            chan struct{}
	// kick tells the writer that a change waits to be written.
	kick  chan struct{}
	known map[string]knownSession
	// gen rises whenever entries of known are dropped (forget, evict):
	// a store read that began before cannot tell whether what it read
	// is still true, and does not remember it.
	gen uint64
	// moduleKnown lists the module identities in known, by device, so
	// that forgetting a device (deleted with its modules) forgets them.
	moduleKnown map[string]map[string]struct{}
	// owners is the connection that owns each connected device's session:
	// a connection that was taken over may still be handling a SUBSCRIBE,
	// and its late save must not overwrite (or resurrect) the session of
	// the connection that replaced it.
	owners map[string]*conn
}

// pendingChange is a change not yet written, with its number. fresh says
// the store held no session for the device when it was made (and no write
// of one had started since): losing it loses nothing the device was told.
type pendingChange struct {
	SessionChange
	seq   uint64
	fresh bool
}

type knownSession struct {
	subs    bus.Feature
	present bool
}

func newSessions(store SessionStore) *sessions {
	fetch := func(ctx context.Context, ids []string) (map[string]bus.Feature, error) {
		return store.Sessions(ctx, ids)
	}
	return &sessions{store: store, reads: batch.New(fetch, maxSessionBatch, sessionReadTimeout), pending: map[string]pendingChange{},
		advanced: make(chan struct{}), kick: make(chan struct{}, 1),
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

// save records c's new subscription set, if c owns the session, and
// returns the change's number for waitWritten, or 0 when there is nothing
// to wait for: c does not own the session, or the store holds none (a
// device's first session). A first session lost before it is written
// makes the device's next CONNACK say sessionPresent=0, and the device
// subscribes again, as MQTT intends; so a connect storm's first
// subscriptions are written in batches every sessionFlushEvery, without
// holding their SUBACKs. A change to a stored session is written before
// the device is told.
//
// In a cluster (a connection with an epoch) every change is written
// before its SUBACK, a first session too. The device's next connection
// may reach another node, which reads the store, and a write of this
// connection that lands after that connection's claim is dropped (it is
// stale there); so what was acknowledged must be in the store by then.
// Azure's SDKs count on it: they keep a session's subscriptions and do
// not subscribe again when a CONNACK says sessionPresent=0.
func (s *sessions) save(id string, subs bus.Feature, c *conn) uint64 {
	s.mu.Lock()
	if s.owners[id] != c {
		s.mu.Unlock()
		return 0
	}
	k, known := s.known[id]
	p, pending := s.pending[id]
	fresh := c.epoch == 0 && (known && !k.present && !pending || pending && p.fresh && p.seq > s.taken)
	seq := s.change(SessionChange{DeviceID: id, Subscriptions: subs, Epoch: c.epoch}, fresh)
	s.remember(id, knownSession{subs, true})
	s.mu.Unlock()
	if fresh {
		return 0
	}
	select {
	case s.kick <- struct{}{}:
	default: // a write is already asked for
	}
	return seq
}

// discard ends the device's session (a clean-session connect whose
// connection has epoch) and returns the change's number for waitWritten,
// or 0 when the store holds no session to delete: a stored session left
// behind by a crash would come back, with sessionPresent=1, at a later
// clean-session-0 connect.
func (s *sessions) discard(id string, epoch int64) uint64 {
	s.mu.Lock()
	var seq uint64
	if k, ok := s.known[id]; !ok || k.present {
		p, pending := s.pending[id]
		fresh := ok && pending && p.fresh && p.seq > s.taken // only an unwritten first session
		seq = s.change(SessionChange{DeviceID: id, Delete: true, Epoch: epoch}, false)
		if fresh {
			seq = 0
		}
	}
	s.remember(id, knownSession{})
	s.mu.Unlock()
	if seq != 0 {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return seq
}

// change queues a change to be written and returns its number (under
// s.mu).
func (s *sessions) change(c SessionChange, fresh bool) uint64 {
	s.seq++
	s.pending[c.DeviceID] = pendingChange{c, s.seq, fresh}
	return s.seq
}

// waitWritten waits until change seq is in the store; false if it is not
// within wait, or stop closes first.
func (s *sessions) waitWritten(seq uint64, wait time.Duration, stop <-chan struct{}) bool {
	if seq == 0 {
		return true
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		written, advanced := s.written, s.advanced
		s.mu.Unlock()
		if written >= seq {
			return true
		}
		select {
		case <-advanced:
		case <-timeout.C:
			return false
		case <-stop:
			return false
		}
	}
}

// maxKnownSessions bounds what sessions remembers (some 100 bytes an
// entry): a fleet that moves between the nodes of a cluster would
// otherwise leave every node remembering every device. A variable for
// tests.
var maxKnownSessions = 1 << 18

// remember records what is known of a session (under s.mu).
func (s *sessions) remember(id string, k knownSession) {
	if _, ok := s.known[id]; !ok && len(s.known) >= maxKnownSessions {
		s.evict()
	}
	s.known[id] = k
	if dev, mod := herd.SplitIdentity(id); mod != "" {
		if s.moduleKnown[dev] == nil {
			s.moduleKnown[dev] = map[string]struct{}{}
		}
		s.moduleKnown[dev][id] = struct{}{}
	}
}

// evict forgets an arbitrary eighth of the sessions remembered (Go's map
// order), except those with a change not yet written, which are newer
// than the store (under s.mu). A session forgotten is read from the store
// at its device's next connect; a change to it is then written before
// its SUBACK, as for any stored session.
func (s *sessions) evict() {
	s.gen++
	drop := max(len(s.known)/8, 1)
	for id := range s.known {
		if drop == 0 {
			break
		}
		if _, unwritten := s.pending[id]; unwritten {
			continue
		}
		drop--
		delete(s.known, id)
		if dev, mod := herd.SplitIdentity(id); mod != "" {
			delete(s.moduleKnown[dev], id)
			if len(s.moduleKnown[dev]) == 0 {
				delete(s.moduleKnown, dev)
			}
		}
	}
}

// forget drops what is remembered about a device's session (and, for a
// device, its modules' sessions, which go with it) or a module's.
func (s *sessions) forget(id string) {
	s.mu.Lock()
	s.gen++
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
	gen := s.gen
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
	if _, changed := s.known[id]; !changed && s.gen == gen {
		s.remember(id, knownSession{subs, present})
	}
	s.mu.Unlock()
	return subs, present, nil
}

// generation returns the generation of what is remembered, for learn: call
// it before the store read whose sessions learn is given.
func (s *sessions) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// learn remembers the sessions of devices (not modules) read from the
// store with their keys, so that their connects do not read them again:
// ids are the devices read, subs the sessions of those that have one. It
// remembers nothing if entries were dropped since gen (the read may be
// stale), and keeps what is already known (a change made here since is
// newer than the read).
func (s *sessions) learn(gen uint64, ids []string, subs map[string]bus.Feature) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	for _, id := range ids {
		if _, ok := s.known[id]; ok {
			continue
		}
		if _, mod := herd.SplitIdentity(id); mod != "" {
			continue
		}
		f, present := subs[id]
		s.remember(id, knownSession{f, present})
	}
}

// flush writes the changes waiting, in one transaction.
func (s *sessions) flush(ctx context.Context) error {
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.mu.Unlock()
		return nil
	}
	upto := s.seq
	s.taken = upto
	batch := make([]SessionChange, 0, len(s.pending))
	for _, c := range s.pending {
		batch = append(batch, c.SessionChange)
	}
	s.mu.Unlock()
	if err := s.store.SaveSessions(ctx, batch); err != nil {
		return err
	}
	// Forget what was written unless it changed again meanwhile.
	s.mu.Lock()
	for _, c := range batch {
		if s.pending[c.DeviceID].seq <= upto {
			delete(s.pending, c.DeviceID)
		}
	}
	s.written = upto
	close(s.advanced)
	s.advanced = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// run writes changes until ctx ends: at once when a SUBSCRIBE waits for
// its change, else every sessionFlushEvery; after a failure, again
// sessionFlushEvery later.
func (s *sessions) run(ctx context.Context, log *slog.Logger) error {
	t := time.NewTicker(sessionFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-t.C:
		}
		if err := s.flush(ctx); err != nil {
			log.Error("save device sessions", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
}
