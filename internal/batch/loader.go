// Package batch gathers single-key reads that arrive together into one
// read of many keys: the key and session lookups of a burst of connects,
// which would otherwise cost one store round trip each.
//
// A Loader adds no delay: a lookup that finds no read in flight starts one
// at once with its own key; lookups that arrive while a read is in flight
// wait for it to end and go together in the next. Under load the batches
// grow by themselves; an idle loader reads one key at a time.
//
// One goroutine does a loader's fetches, and it waits a while (linger)
// for the next round before it ends. A burst of lookups therefore reuses
// one goroutine whose stack has grown to what the store's driver needs
// (the SQLite driver's interpreter has a large frame), instead of growing
// a new goroutine's stack for every fetch.
package batch

import (
	"context"
	"sync"
	"time"
)

// linger is how long a loader's goroutine waits for another round before
// it ends.
const linger = time.Second

// Fetch reads many keys at once: a map holding the keys that exist (a key
// absent from it does not exist), or an error that fails every key of the
// batch.
type Fetch[K comparable, V any] func(ctx context.Context, keys []K) (map[K]V, error)

// Loader coalesces Load calls into Fetch calls. The zero value is not
// usable; use New.
type Loader[K comparable, V any] struct {
	fetch   Fetch[K, V]
	max     int
	timeout time.Duration
	linger  time.Duration

	mu      sync.Mutex
	busy    bool           // a fetch is in flight; when not, waiting is empty
	parked  bool           // the goroutine waits on wake for a round
	wake    chan struct{}  // capacity 1: sent to only when parked is set
	waiting []*round[K, V] // the rounds behind it, oldest first
}

// round is one fetch and the keys it reads.
type round[K comparable, V any] struct {
	keys []K
	done chan struct{} // closed when got and err are set
	got  map[K]V
	err  error
}

// New returns a loader that reads at most max keys in one fetch (a larger
// backlog goes in several), each fetch bounded by timeout: it runs on
// behalf of every waiting caller, so no single caller's context governs
// it.
func New[K comparable, V any](fetch Fetch[K, V], max int, timeout time.Duration) *Loader[K, V] {
	return &Loader[K, V]{fetch: fetch, max: max, timeout: timeout, linger: linger, wake: make(chan struct{}, 1)}
}

// Load returns key's value, whether it exists, or the error of the fetch
// that read it; or ctx's error if ctx ends first (the fetch goes on for
// the others).
func (l *Loader[K, V]) Load(ctx context.Context, key K) (V, bool, error) {
	l.mu.Lock()
	n := len(l.waiting)
	if n == 0 || len(l.waiting[n-1].keys) >= l.max {
		l.waiting = append(l.waiting, &round[K, V]{done: make(chan struct{})})
		n++
	}
	r := l.waiting[n-1]
	r.keys = append(r.keys, key)
	if !l.busy {
		l.busy = true
		if l.parked {
			l.parked = false
			l.wake <- struct{}{}
		} else {
			go l.run()
		}
	}
	l.mu.Unlock()
	var zero V
	select {
	case <-r.done:
	case <-ctx.Done():
		return zero, false, ctx.Err()
	}
	if r.err != nil {
		return zero, false, r.err
	}
	v, ok := r.got[key]
	return v, ok, nil
}

// take removes the oldest waiting round (nil if none); l.mu is held.
func (l *Loader[K, V]) take() *round[K, V] {
	if len(l.waiting) == 0 {
		return nil
	}
	r := l.waiting[0]
	l.waiting[0] = nil
	l.waiting = l.waiting[1:]
	return r
}

// run fetches round after round; when none is waiting it parks for up to
// linger, then ends unless a Load woke it.
func (l *Loader[K, V]) run() {
	var idle *time.Timer
	for {
		l.mu.Lock()
		r := l.take()
		if r == nil {
			l.busy, l.parked = false, true
			l.mu.Unlock()
			if idle == nil {
				idle = time.NewTimer(l.linger)
			} else {
				idle.Reset(l.linger)
			}
			select {
			case <-l.wake:
				idle.Stop()
				continue
			case <-idle.C:
			}
			l.mu.Lock()
			woken := !l.parked
			l.parked = false
			l.mu.Unlock()
			if !woken {
				return
			}
			<-l.wake // sent as the timer fired
			continue
		}
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		r.got, r.err = l.fetch(ctx, r.keys)
		cancel()
		close(r.done)
	}
}
