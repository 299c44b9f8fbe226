package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
)

// gauge reads a gauge of the hub's registry.
func gauge(t testing.TB, h *hubtest.Hub, name string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// MaxConnections bounds TCP, TLS and WebSocket sockets together, counted
// from accept; one over it is answered CONNACK 3 and closed, and once a
// socket closes a device gets in again. In-memory connections do not count.
func TestMaxConnections(t *testing.T) {
	h := hubtest.Start(t, hubtest.WithConfig(func(c *hub.Config) { c.MaxConnections = 3 }))
	now := time.Now()
	var devs []device
	for _, id := range []string{"tcp", "tls", "ws", "extra", "pipe", "later"} {
		devs = append(devs, newDevice(t, h, id))
	}
	open := func() float64 { return gauge(t, h, "herd_mqtt_open_sockets") }

	dialPlain(t, h).connect(devs[0], true, now)
	dialTLS(t, h).connect(devs[1], true, now)
	ws := dialWS(t, h)
	ws.connect(devs[2], true, now)
	if n := open(); n != 3 {
		t.Fatalf("herd_mqtt_open_sockets = %v, want 3", n)
	}

	for name, dial := range map[string]func(testing.TB, *hubtest.Hub) *rawClient{"tcp": dialPlain, "tls": dialTLS, "ws": dialWS} {
		c := dial(t, h)
		ack := c.connectWith(connectPacket(devs[3].id, devs[3].username(), devs[3].token(now.Add(time.Hour)), true))
		if ack.ReturnCode != packets.ErrRefusedServerUnavailable {
			t.Fatalf("%s over the bound: CONNACK %d, want 3 (server unavailable)", name, ack.ReturnCode)
		}
		c.expectClosed()
	}
	if n := counter(t, h, "herd_mqtt_over_capacity_total"); n != 3 {
		t.Fatalf("herd_mqtt_over_capacity_total = %v, want 3", n)
	}

	// An in-memory connection is not a socket: it is not bounded.
	device, hubSide := net.Pipe()
	t.Cleanup(func() { device.Close() })
	go h.Gateway.ServeConn(hubSide)
	p := &rawClient{t: t, nc: device, r: bufio.NewReader(device)}
	p.connect(devs[4], true, now)
	p.ping()

	// A socket closes: the next device gets in.
	ws.nc.Close()
	hubtest.Eventually(t, 10*time.Second, func() bool { return open() == 2 }, "the closed WebSocket is still counted")
	later := dialPlain(t, h)
	later.connect(devs[5], true, now)
	later.ping()

	// A socket counts from accept, before its CONNECT.
	later.nc.Close()
	hubtest.Eventually(t, 10*time.Second, func() bool { return open() == 2 }, "the closed socket is still counted")
	dialPlain(t, h) // says nothing
	hubtest.Eventually(t, 10*time.Second, func() bool { return open() == 3 }, "a socket before CONNECT is not counted")
	c := dialPlain(t, h)
	if ack := c.connectWith(connectPacket(devs[5].id, devs[5].username(), devs[5].token(now.Add(time.Hour)), true)); ack.ReturnCode != packets.ErrRefusedServerUnavailable {
		t.Fatalf("CONNACK %d, want 3 while a silent socket holds the last place", ack.ReturnCode)
	}
}

// flakyListener fails its first accepts with errs.
type flakyListener struct {
	net.Listener
	mu   sync.Mutex
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// logRecorder keeps the messages of the records it handles.
type logRecorder struct {
	mu   *sync.Mutex
	msgs *[]string
}

func (r logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	*r.msgs = append(*r.msgs, rec.Message)
	r.mu.Unlock()
	return nil
}
func (r logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r logRecorder) WithGroup(string) slog.Handler      { return r }

func (r logRecorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range *r.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// Accept errors that pass (out of file descriptors, buffers; an aborted
// connection) are retried with backoff and logged once per burst; Serve
// returns only for a closed listener or an error that does not pass.
func TestAcceptErrorsAreRetried(t *testing.T) {
	logs := logRecorder{mu: &sync.Mutex{}, msgs: &[]string{}}
	h := hubtest.Start(t, hubtest.WithConfig(func(c *hub.Config) { c.Log = slog.New(logs) }))
	d := newDevice(t, h, "dev1")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	acceptErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", errno)}
	}
	fl := &flakyListener{Listener: l, errs: []error{
		acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE),
		acceptErr(syscall.ENOBUFS), acceptErr(syscall.ECONNABORTED),
	}}
	served := make(chan error, 1)
	go func() { served <- h.Gateway.Serve(fl) }()

	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawClient{t: t, nc: nc, r: bufio.NewReader(nc)}
	c.connect(d, true, time.Now()) // accepted after the five failures
	c.ping()
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v", err)
	default:
	}
	if n := counter(t, h, "herd_mqtt_accept_errors_total"); n != 5 {
		t.Fatalf("herd_mqtt_accept_errors_total = %v, want 5", n)
	}
	if n := logs.count("accepting device connections failed"); n != 1 {
		t.Fatalf("the burst of accept errors was logged %d times, want once", n)
	}

	// An error that does not pass ends Serve with it.
	broken := errors.New("listener broken")
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if err := h.Gateway.Serve(&flakyListener{Listener: l2, errs: []error{broken}}); !errors.Is(err, broken) {
		t.Fatalf("Serve on a broken listener returned %v", err)
	}

	// Stopping the hub closes the listener: Serve returns nil.
	h.Stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve returned %v after the hub stopped", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the hub stopped")
	}
}
