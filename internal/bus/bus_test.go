package bus

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

type fakeConn struct {
	f       atomic.Uint32
	desired atomic.Int64
}

func (c *fakeConn) Features() Feature             { return Feature(c.f.Load()) }
func (c *fakeConn) SendDesired(v int64, _ []byte) { c.desired.Store(v) }
func (c *fakeConn) SendMethod(*MethodCall) bool   { return true }
func (c *fakeConn) set(f Feature)                 { c.f.Store(uint32(f)) }
func withTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func TestAttachDetachTakeover(t *testing.T) {
	b := New()
	a, c := &fakeConn{}, &fakeConn{}
	if prev := b.Attach("d", a); prev != nil {
		t.Fatal("unexpected previous connection")
	}
	if prev := b.Attach("d", c); prev != a {
		t.Fatal("takeover did not return the old connection")
	}
	if b.Connected() != 1 {
		t.Fatalf("connected %d", b.Connected())
	}
	if b.Detach("d", a) {
		t.Fatal("the replaced connection detached the device")
	}
	if !b.Detach("d", c) || b.Connected() != 0 || b.Lookup("d") != nil {
		t.Fatal("detach")
	}
}

func TestDesiredOnlyWhenSubscribed(t *testing.T) {
	b := New()
	c := &fakeConn{}
	b.Attach("d", c)
	b.Desired("d", 2, nil)
	if c.desired.Load() != 0 {
		t.Fatal("delivered without a subscription")
	}
	c.set(Desired)
	b.Desired("d", 3, nil)
	b.Desired("other", 4, nil)
	if c.desired.Load() != 3 {
		t.Fatalf("desired %d", c.desired.Load())
	}
}

func TestWaitMethodsIsWoken(t *testing.T) {
	b := New()
	ctx, cancel := withTimeout()
	defer cancel()
	got := make(chan Conn, 1)
	go func() {
		c, _ := b.WaitMethods(ctx, "d")
		got <- c
	}()
	// Connected but not subscribed: still waiting.
	c := &fakeConn{}
	b.Attach("d", c)
	select {
	case <-got:
		t.Fatal("returned before the device subscribed to methods")
	case <-time.After(20 * time.Millisecond):
	}
	c.set(Methods | Desired)
	b.FeaturesChanged("d", c)
	if r := <-got; r != c {
		t.Fatalf("got %v", r)
	}
	// Already online: immediate, even with an expired context.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if r, err := b.WaitMethods(done, "d"); err != nil || r != c {
		t.Fatalf("online device: %v %v", r, err)
	}
}

func TestWaitMethodsTimesOutAndCleansUp(t *testing.T) {
	b := New()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := b.WaitMethods(ctx, "ghost"); err == nil {
		t.Fatal("no error for an offline device")
	}
	for i := range b.shards {
		if n := len(b.shards[i].entries); n != 0 {
			t.Fatalf("%d entries left behind", n)
		}
	}
}
