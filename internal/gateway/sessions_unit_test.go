package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/bus"
)

// gatedStore is a SessionStore whose writes wait for the test to let
// them through, and fail while failing is set.
type gatedStore struct {
	SessionStore
	entered chan struct{} // a write has its batch
	gate    chan struct{} // one receive per write
	mu      sync.Mutex
	failing bool
	writes  [][]SessionChange
}

// setFailing makes the writes fail (true) or succeed.
func (g *gatedStore) setFailing(f bool) {
	g.mu.Lock()
	g.failing = f
	g.mu.Unlock()
}

// let waits for the next write to have its batch and lets it through.
func (g *gatedStore) let() {
	<-g.entered
	g.gate <- struct{}{}
}

func (g *gatedStore) SaveSessions(ctx context.Context, changes []SessionChange) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failing {
		return errors.New("store unavailable")
	}
	g.writes = append(g.writes, append([]SessionChange(nil), changes...))
	return nil
}

// TestSessionGroupCommit: a change made while a write is in progress goes
// in the next write, and its waiter wakes once that one is done; a write
// that fails keeps its changes, and their waiters wait for the write that
// succeeds.
func TestSessionGroupCommit(t *testing.T) {
	g := &gatedStore{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	s := newSessions(g)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() { cancel(); close(g.gate); <-ran }()
	a, b := &conn{}, &conn{}
	s.claim("a", a)
	s.claim("b", b)

	seqA := s.save("a", bus.Methods, a) // starts a write, which waits at the gate
	waitedA := make(chan bool, 1)
	go func() { waitedA <- s.waitWritten(seqA, time.Minute, nil) }()
	<-g.entered // the write of "a" has its batch: "b" goes in the next one
	seqB := s.save("b", bus.Desired, b)
	if s.waitWritten(seqB, 10*time.Millisecond, nil) {
		t.Fatal("a change was reported written before any write")
	}
	g.gate <- struct{}{} // the first write
	if !<-waitedA {
		t.Fatal("the waiter of the first change did not wake")
	}
	g.setFailing(true)
	g.let() // the second write fails
	if s.waitWritten(seqB, 50*time.Millisecond, nil) {
		t.Fatal("a change whose write failed was reported written")
	}
	g.setFailing(false)
	g.let() // tried again after sessionFlushEvery
	if !s.waitWritten(seqB, time.Minute, nil) {
		t.Fatal("the change was not written once the store came back")
	}
	g.mu.Lock()
	if len(g.writes) != 2 || len(g.writes[0]) != 1 || g.writes[0][0].DeviceID != "a" || len(g.writes[1]) != 1 || g.writes[1][0].DeviceID != "b" {
		t.Fatalf("writes %+v; want [a] then [b]", g.writes)
	}
	g.mu.Unlock()
	if len(g.writes) != 2 || len(g.writes[0]) != 1 || g.writes[0][0].DeviceID != "a" || len(g.writes[1]) != 1 || g.writes[1][0].DeviceID != "b" {
		t.Fatalf("writes %+v; want [a] then [b]", g.writes)
	}
	// A device whose store holds no session: its first changes are not
	// waited for until a write takes them.
	s.claim("c", a)
	s.mu.Lock()
	s.remember("c", knownSession{})
	s.mu.Unlock()
	if seq := s.save("c", bus.Methods, a); seq != 0 {
		t.Fatalf("a first session is waited for (change %d)", seq)
	}
	if seq := s.save("c", bus.Methods|bus.Desired, a); seq != 0 {
		t.Fatalf("a first session not yet taken by a write is waited for (change %d)", seq)
	}
	if len(s.kick) != 0 {
		t.Fatal("a first session asked for a write at once")
	}
	s.mu.Lock()
	s.taken = s.seq // as a write does when it starts
	s.mu.Unlock()
	if seq := s.save("c", bus.Desired, a); seq == 0 {
		t.Fatal("a change after a write took the first session is not waited for")
	}
	g.let()

	stop := make(chan struct{})
	close(stop)
	if s.waitWritten(s.save("a", bus.Desired, a), time.Minute, stop) {
		t.Fatal("waitWritten did not end when told to stop")
	}
	if seq := s.save("a", bus.Methods, b); seq != 0 || !s.waitWritten(seq, time.Minute, nil) {
		t.Fatalf("a save by a connection that does not own the session gave change %d to wait for; want none", seq)
	}
}

// TestKnownSessionsBounded: what sessions remembers stays within its
// bound, and a session with a change not yet written (newer than the
// store) is never forgotten for it.
func TestKnownSessionsBounded(t *testing.T) {
	old := maxKnownSessions
	maxKnownSessions = 8
	defer func() { maxKnownSessions = old }()
	s := newSessions(&gatedStore{entered: make(chan struct{}, 1), gate: make(chan struct{})})
	c := &conn{}
	s.claim("unwritten", c)
	s.save("unwritten", bus.Methods, c) // nothing writes it: no run
	for i := range 100 {
		s.mu.Lock()
		s.remember(fmt.Sprintf("d%03d", i), knownSession{bus.Methods, true})
		s.remember(fmt.Sprintf("d%03d/m", i), knownSession{})
		n := len(s.known)
		s.mu.Unlock()
		if n > 8 {
			t.Fatalf("%d sessions remembered, bound 8", n)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.known["unwritten"]; !ok || k.subs != bus.Methods {
		t.Fatalf("the session with an unwritten change was forgotten: %+v %v", k, ok)
	}
	modules := 0
	for _, ms := range s.moduleKnown {
		modules += len(ms)
	}
	if modules > 8 {
		t.Fatalf("moduleKnown lists %d modules, more than are remembered", modules)
	}
}

// readCounter is a SessionStore that counts its reads; it holds no
// session.
type readCounter struct {
	SessionStore
	mu    sync.Mutex
	reads int
}

func (r *readCounter) Sessions(ctx context.Context, ids []string) (map[string]bus.Feature, error) {
	r.mu.Lock()
	r.reads++
	r.mu.Unlock()
	return map[string]bus.Feature{}, nil
}

func (r *readCounter) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reads
}

// TestLearnSessions: sessions read with their devices' keys spare the
// connects a read; a change made here is kept over what such a read
// says; a read that began before something was forgotten teaches
// nothing.
func TestLearnSessions(t *testing.T) {
	store := &readCounter{}
	s := newSessions(store)
	ctx := context.Background()
	s.learn(s.generation(), []string{"a", "b"}, map[string]bus.Feature{"a": bus.Methods})
	if subs, present, err := s.load(ctx, "a"); err != nil || !present || subs != bus.Methods {
		t.Errorf("load(a) = %v, %v, %v; want the learnt Methods session", subs, present, err)
	}
	if _, present, err := s.load(ctx, "b"); err != nil || present {
		t.Errorf("load(b) = %v, %v; want no session, as learnt", present, err)
	}
	if n := store.count(); n != 0 {
		t.Errorf("%d store reads for sessions that were learnt", n)
	}
	// A change made here is newer than a read.
	c := &conn{}
	s.claim("a", c)
	s.save("a", bus.Desired, c)
	s.learn(s.generation(), []string{"a"}, map[string]bus.Feature{"a": bus.Methods})
	if subs, _, _ := s.load(ctx, "a"); subs != bus.Desired {
		t.Errorf("load(a) = %v after a change here and an older read; want the change", subs)
	}
	// Something forgotten while the read was in flight: the read may be
	// stale, so it is not remembered.
	gen := s.generation()
	s.forget("z")
	s.learn(gen, []string{"z"}, map[string]bus.Feature{"z": bus.Methods})
	if _, present, err := s.load(ctx, "z"); err != nil || present {
		t.Errorf("load(z) = %v, %v; want the store's answer (none), not the stale read", present, err)
	}
	if n := store.count(); n != 1 {
		t.Errorf("%d store reads, want 1 (z's)", n)
	}
}
