package job

import (
	"context"
	"testing"
	"time"
)

// TestLimiterSharesFairly: with the cap taken, waiting jobs get freed
// slots in turn, whatever how many each asks for.
func TestLimiterSharesFairly(t *testing.T) {
	l := newLimiter(2)
	ctx := context.Background()
	l.acquire(ctx, "big", 1)
	l.acquire(ctx, "big", 1)
	order := make(chan string, 10)
	wait := func(job string) {
		go func() {
			if _, err := l.acquire(ctx, job, 1); err == nil {
				order <- job
			}
		}()
	}
	// "big" queues five more requests before "small" queues two.
	for i := range 5 {
		wait("big")
		waitQueued(t, l, "big", i+1)
	}
	for i := range 2 {
		wait("small")
		waitQueued(t, l, "small", i+1)
	}
	var got []string
	for range 4 {
		l.release(1)
		got = append(got, <-order)
	}
	want := []string{"big", "small", "big", "small"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("grant order %v, want %v", got, want)
		}
	}
	// A waiter that gives up leaves the queue; its slot is not lost.
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := l.acquire(cctx, "gone", 1); errc <- err }()
	waitQueued(t, l, "gone", 1)
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("cancelled acquire succeeded")
	}
	for range 3 {
		l.release(1)
		<-order
	}
	l.release(2)
	if n := l.inUse(); n != 0 {
		t.Errorf("%d slots in use at the end", n)
	}
	if n, _ := l.acquire(ctx, "x", 5); n != 2 {
		t.Errorf("a request over the cap got %d slots, want the cap", n)
	}
}

// waitQueued waits until job has n requests waiting.
func waitQueued(t *testing.T, l *limiter, job string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		got := len(l.queue[job])
		l.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d waiting, want %d", job, got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
