package device

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
)

// group owns the goroutines a Client starts (the supervisor, the handler
// deliveries, each method call) so that Close can wait for them. Unlike a
// sync.WaitGroup it knows which goroutines are running, so that wait can
// leave out the goroutines that are themselves inside Close: a handler
// that closes its own client does not wait for itself, and two handlers
// closing it at once do not wait for each other.
type group struct {
	mu       sync.Mutex
	starting int                 // started by Go, id not yet known
	running  map[uint64]struct{} // by goroutine id
	closing  map[uint64]int      // goroutines inside Close, by id
	stopped  bool                // Go starts nothing more
	changed  chan struct{}       // closed and replaced on every change
}

func newGroup() *group {
	return &group{running: map[uint64]struct{}{}, closing: map[uint64]int{}, changed: make(chan struct{})}
}

// Go runs fn in a new goroutine of the group. It reports false, and runs
// nothing, once stop has been called.
func (g *group) Go(fn func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.starting++
	go func() {
		id := goid()
		g.mu.Lock()
		g.starting--
		g.running[id] = struct{}{}
		g.mu.Unlock() // no change a waiter could be waiting for
		defer func() {
			g.mu.Lock()
			delete(g.running, id)
			g.notify()
			g.mu.Unlock()
		}()
		fn()
	}()
	return true
}

// stop makes later calls of Go start nothing.
func (g *group) stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}

// wait returns when every goroutine of the group has returned, except
// those inside a wait themselves (the caller included).
func (g *group) wait() {
	id := goid()
	g.mu.Lock()
	g.closing[id]++
	g.notify() // another waiter may be waiting only for this goroutine
	for !g.idle() {
		ch := g.changed
		g.mu.Unlock()
		<-ch
		g.mu.Lock()
	}
	if g.closing[id]--; g.closing[id] == 0 {
		delete(g.closing, id)
	}
	g.mu.Unlock()
}

// idle reports whether every running goroutine is inside a wait; g.mu is
// held.
func (g *group) idle() bool {
	if g.starting > 0 {
		return false
	}
	for id := range g.running {
		if g.closing[id] == 0 {
			return false
		}
	}
	return true
}

// notify wakes the waiters; g.mu is held.
func (g *group) notify() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// goid returns the id of the calling goroutine, from the first line of its
// stack trace ("goroutine 18 [running]:"). Go offers no other way to tell
// goroutines apart; golang.org/x/net/http2 reads it the same way
// (gotrack.go). The group needs it only so that Close called from a
// handler can leave out its own goroutine.
func goid() uint64 {
	var buf [64]byte
	b := bytes.TrimPrefix(buf[:runtime.Stack(buf[:], false)], []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
