package device_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/hubtest"
)

// report is one call of a connection-state handler.
type report struct {
	state device.ConnectionState
	err   error
}

func (r report) String() string { return fmt.Sprintf("%s(%v)", r.state, r.err) }

// stateLog records what a connection-state handler is told.
type stateLog struct {
	mu      sync.Mutex
	reports []report
}

func (l *stateLog) handle(s device.ConnectionState, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports = append(l.reports, report{s, err})
}

func (l *stateLog) all() []report {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]report(nil), l.reports...)
}

// match is a pattern for one report.
type match struct {
	state device.ConnectionState
	err   func(error) bool
}

func noErr(err error) bool  { return err == nil }
func anyErr(err error) bool { return err != nil }
func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}
func code(c herd.ErrorCode) func(error) bool {
	return func(err error) bool { return herd.IsCode(err, c) }
}

// seen reports whether the reports contain the patterns in order (not
// necessarily adjacent).
func (l *stateLog) seen(want ...match) bool {
	i := 0
	for _, r := range l.all() {
		if i < len(want) && r.state == want[i].state && want[i].err(r.err) {
			i++
		}
	}
	return i == len(want)
}

// The state handler follows the connection through a drop, failed
// reconnection attempts (the device is disabled, so CONNECT is refused),
// a successful reconnect and Close, whose report is the last one.
func TestConnectionStateReconnect(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	c := connect(t, h, newDevice(t, h, "dev1"), device.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	var log stateLog
	c.OnConnectionState(log.handle)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return log.seen(match{device.Connected, noErr}) }, "no Connected: %v", log.all())

	setStatus := func(st herd.DeviceStatus) {
		t.Helper()
		d, err := h.Service.GetDevice(ctx, "dev1")
		if err != nil {
			t.Fatal(err)
		}
		d.Status = st
		if _, err := h.Service.UpdateDevice(ctx, *d, "*"); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(herd.DeviceDisabled)
	hubtest.Eventually(t, 10*time.Second, func() bool {
		return log.seen(
			match{device.Connected, noErr},
			match{device.Disconnected, anyErr},
			match{device.Reconnecting, noErr},
			match{device.Reconnecting, code(herd.ErrUnauthorized)},
		)
	}, "no refused reconnection attempt: %v", log.all())
	setStatus(herd.DeviceEnabled)
	hubtest.Eventually(t, 20*time.Second, func() bool {
		return log.seen(
			match{device.Disconnected, anyErr},
			match{device.Reconnecting, code(herd.ErrUnauthorized)},
			match{device.Connected, noErr},
		)
	}, "no reconnect: %v", log.all())

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := log.all()
	if last := got[len(got)-1]; last.state != device.Disconnected || !errors.Is(last.err, device.ErrClosed) {
		t.Fatalf("last report %v, want Disconnected(ErrClosed); all: %v", last, got)
	}
	for _, r := range got[:len(got)-1] {
		if errors.Is(r.err, device.ErrClosed) {
			t.Fatalf("ErrClosed reported before the end: %v", got)
		}
	}
}

// A token renewal is reported as a disconnection with ErrTokenRenewal,
// followed by Reconnecting and Connected.
func TestConnectionStateTokenRenewal(t *testing.T) {
	h := hubtest.Start(t)
	c := connect(t, h, newDevice(t, h, "dev1"), device.WithTokenRenewal(time.Hour, time.Hour-time.Second))
	var log stateLog
	c.OnConnectionState(log.handle)
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hubtest.Eventually(t, 20*time.Second, func() bool {
		return log.seen(
			match{device.Connected, noErr},
			match{device.Disconnected, is(device.ErrTokenRenewal)},
			match{device.Reconnecting, noErr},
			match{device.Connected, noErr},
		)
	}, "no renewal reported: %v", log.all())
}

// A failed Connect reports nothing, and Close after it neither.
func TestConnectionStateRefused(t *testing.T) {
	h := hubtest.Start(t)
	c := connect(t, h, "HostName=localhost;DeviceId=nobody;SharedAccessKey=c2VjcmV0")
	var log stateLog
	c.OnConnectionState(log.handle)
	if err := c.Connect(context.Background()); !herd.IsCode(err, herd.ErrUnauthorized) {
		t.Fatalf("connect as an unknown device: %v", err)
	}
	c.Close()
	if got := log.all(); len(got) != 0 {
		t.Fatalf("reports %v", got)
	}
}

// Close cancels the context of a running method handler and waits for it
// to return.
func TestCloseWaitsForMethodHandler(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	c := connect(t, h, newDevice(t, h, "dev1"))
	started := make(chan struct{})
	var mu sync.Mutex
	var handlerErr error
	returned := false
	c.OnMethod("wait", func(ctx context.Context, _ json.RawMessage) (int, any) {
		close(started)
		<-ctx.Done()
		mu.Lock()
		defer mu.Unlock()
		handlerErr, returned = ctx.Err(), true
		return 200, nil
	})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		// The device never answers: Close comes first.
		_, _ = h.Service.InvokeMethod(ctx, "dev1", herd.MethodRequest{MethodName: "wait", ResponseTimeoutInSeconds: 5})
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the method handler did not start")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !returned || !errors.Is(handlerErr, context.Canceled) {
		t.Fatalf("Close returned before the handler (returned %v, ctx %v)", returned, handlerErr)
	}
}

// Close may be called from any handler without deadlocking: from a method
// handler (two at once, each waiting for the other to return or close),
// a desired-property handler or a connection-state handler.
func TestCloseFromHandler(t *testing.T) {
	const timeout = 20 * time.Second
	closeFrom := func(t *testing.T, h *hubtest.Hub, id string, register func(c *device.Client, closed func()), trigger func()) {
		t.Helper()
		c := connect(t, h, newDevice(t, h, id))
		done := make(chan struct{})
		var once sync.Once
		register(c, func() {
			if err := c.Close(); err != nil {
				t.Error(err)
			}
			once.Do(func() { close(done) })
		})
		if err := c.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		trigger()
		select {
		case <-done:
		case <-time.After(timeout):
			t.Fatalf("Close from a handler did not return within %s", timeout)
		}
		// The handler's own goroutine ends after it; a Close from outside
		// waits for that.
		ended := make(chan struct{})
		go func() { c.Close(); close(ended) }()
		select {
		case <-ended:
		case <-time.After(timeout):
			t.Fatal("Close after Close from a handler did not return")
		}
	}
	h := hubtest.Start(t)
	ctx := context.Background()

	t.Run("method handlers", func(t *testing.T) {
		var both sync.WaitGroup
		both.Add(2)
		closeFrom(t, h, "m1", func(c *device.Client, closeIt func()) {
			c.OnMethod("stop", func(context.Context, json.RawMessage) (int, any) {
				both.Done()
				both.Wait() // both handlers run, then both close
				closeIt()
				return 200, nil
			})
		}, func() {
			for range 2 {
				go func() {
					_, _ = h.Service.InvokeMethod(ctx, "m1", herd.MethodRequest{MethodName: "stop", ResponseTimeoutInSeconds: 5})
				}()
			}
		})
	})
	t.Run("desired handler", func(t *testing.T) {
		closeFrom(t, h, "d1", func(c *device.Client, closeIt func()) {
			c.OnDesiredChange(func(map[string]any, int64) { closeIt() })
		}, func() {
			patch := herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"stop": true}}}
			if _, err := h.Service.UpdateTwin(ctx, "d1", patch, "*"); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("state handler", func(t *testing.T) {
		closeFrom(t, h, "s1", func(c *device.Client, closeIt func()) {
			c.OnConnectionState(func(s device.ConnectionState, _ error) {
				if s == device.Connected {
					closeIt()
				}
			})
		}, func() {})
	})
}
