package device

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitWithin fails the test if fn does not return within d.
func waitWithin(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %s", what, d)
	}
}

func TestGroup(t *testing.T) {
	t.Run("wait waits for the goroutines", func(t *testing.T) {
		g := newGroup()
		var ended atomic.Int32
		release := make(chan struct{})
		for range 3 {
			g.Go(func() { <-release; ended.Add(1) })
		}
		waited := make(chan int32)
		go func() { g.wait(); waited <- ended.Load() }()
		close(release)
		if n := <-waited; n != 3 {
			t.Fatalf("wait returned after %d of 3 goroutines", n)
		}
	})
	t.Run("a goroutine waiting does not wait for itself", func(t *testing.T) {
		g := newGroup()
		other := make(chan struct{})
		var otherEnded atomic.Bool
		g.Go(func() { <-other; otherEnded.Store(true) })
		result := make(chan bool)
		g.Go(func() { close(other); g.wait(); result <- otherEnded.Load() })
		select {
		case ok := <-result:
			if !ok {
				t.Fatal("wait inside the group did not wait for the other goroutine")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("wait inside the group waited for itself")
		}
		waitWithin(t, 10*time.Second, "wait from outside", g.wait)
	})
	t.Run("goroutines waiting at once do not wait for each other", func(t *testing.T) {
		g := newGroup()
		var both sync.WaitGroup
		both.Add(2)
		var returned sync.WaitGroup
		returned.Add(2)
		for range 2 {
			g.Go(func() { both.Done(); both.Wait(); g.wait(); returned.Done() })
		}
		waitWithin(t, 10*time.Second, "two waits inside the group", returned.Wait)
		waitWithin(t, 10*time.Second, "wait from outside", g.wait)
	})
	t.Run("nothing starts after stop", func(t *testing.T) {
		g := newGroup()
		g.stop()
		if g.Go(func() { t.Error("ran after stop") }) {
			t.Fatal("Go after stop reported true")
		}
		waitWithin(t, 10*time.Second, "wait on an empty group", g.wait)
	})
}

func TestGoid(t *testing.T) {
	here := goid()
	if here == 0 || goid() != here {
		t.Fatalf("goid %d then %d", here, goid())
	}
	other := make(chan uint64)
	go func() { other <- goid() }()
	if id := <-other; id == 0 || id == here {
		t.Fatalf("another goroutine's id %d, this one's %d", id, here)
	}
}
