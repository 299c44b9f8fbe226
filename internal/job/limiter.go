package job

import (
	"context"
	"sync"
)

// limiter is the global cap on in-flight device operations, shared fairly
// between jobs: when operations wait, freed slots go to the waiting jobs
// in turn (round robin), so a job over a million devices cannot starve a
// job over ten.
type limiter struct {
	mu    sync.Mutex
	cap   int
	free  int
	ring  []string            // jobs with waiters, in turn order
	queue map[string][]*grant // each job's waiters, first come first served
}

// grant is one waiting request for n slots.
type grant struct {
	n     int
	ready chan struct{}
	done  bool // granted (under mu)
}

func newLimiter(capacity int) *limiter {
	return &limiter{cap: capacity, free: capacity, queue: map[string][]*grant{}}
}

// acquire takes n slots (at most the cap) for job, waiting its turn. It
// returns the number taken, or ctx's error.
func (l *limiter) acquire(ctx context.Context, job string, n int) (int, error) {
	n = min(max(n, 1), l.cap)
	l.mu.Lock()
	if len(l.ring) == 0 && l.free >= n {
		l.free -= n
		l.mu.Unlock()
		return n, nil
	}
	g := &grant{n: n, ready: make(chan struct{})}
	if len(l.queue[job]) == 0 {
		l.ring = append(l.ring, job)
	}
	l.queue[job] = append(l.queue[job], g)
	l.dispatch()
	l.mu.Unlock()
	select {
	case <-g.ready:
		return n, nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		if g.done {
			l.free += n
			l.dispatch()
			return 0, ctx.Err()
		}
		l.remove(job, g)
		l.dispatch()
		return 0, ctx.Err()
	}
}

// release returns n slots.
func (l *limiter) release(n int) {
	l.mu.Lock()
	l.free += n
	l.dispatch()
	l.mu.Unlock()
}

// dispatch hands free slots to waiting jobs in turn. Called with mu held.
func (l *limiter) dispatch() {
	for len(l.ring) > 0 {
		job := l.ring[0]
		q := l.queue[job]
		g := q[0]
		if g.n > l.free {
			return
		}
		l.free -= g.n
		g.done = true
		close(g.ready)
		l.ring = l.ring[1:]
		if len(q) == 1 {
			delete(l.queue, job)
		} else {
			l.queue[job] = q[1:]
			l.ring = append(l.ring, job) // to the back of the line
		}
	}
}

// remove drops a waiter that gave up. Called with mu held.
func (l *limiter) remove(job string, g *grant) {
	q := l.queue[job]
	for i, o := range q {
		if o == g {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) > 0 {
		l.queue[job] = q
		return
	}
	delete(l.queue, job)
	for i, j := range l.ring {
		if j == job {
			l.ring = append(l.ring[:i:i], l.ring[i+1:]...)
			break
		}
	}
}

// inUse is the number of slots taken.
func (l *limiter) inUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cap - l.free
}
