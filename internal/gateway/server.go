// Package gateway is Herd's device side: a purpose-built MQTT 3.1.1 front
// end (over TCP, TLS or WebSocket) that speaks the Azure IoT Hub device
// dialect of §8 of the compatibility reference. It is not a general
// broker: devices never talk to each other, every topic is fixed per
// device, and anything outside the dialect closes the connection.
//
// Packets are encoded and decoded by github.com/eclipse/paho.mqtt.golang/
// packets. Each connection has one reader goroutine; writes go through a
// bounded per-connection queue drained by a short-lived writer goroutine,
// so a device that stops reading is disconnected instead of slowing
// anyone else. The dialect (topic.go, bag.go, username.go) is kept apart
// from the transport (reader.go, conn.go); the gateway turns packets into
// calls on the twin and method services, and the bus turns domain events
// into packets for the connection that holds the device.
package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/twin"
)

// Limits and defaults.
const (
	// MaxTelemetry bounds the body of a device-to-cloud message (§8.7,
	// §8.10: 256 KB); a larger one closes the connection.
	MaxTelemetry = 256 * 1024
	// MaxPacket bounds one packet: a telemetry body plus topic. A larger
	// packet is not read; the connection is closed.
	MaxPacket = MaxTelemetry + 64*1024
	// connectWait is how long a new connection may take to send CONNECT.
	connectWait = 10 * time.Second
	// maxKeepAlive is Azure's server-side cap (§8.5): the connection is
	// closed after 1.5 × keep-alive without a packet, at most 1767 s.
	maxKeepAlive = 1767 * time.Second
	// writeWait bounds one socket write.
	writeWait = 10 * time.Second
	// activityEvery limits how often one connection records activity
	// (lastActivityTime is that precise; Azure's lags by minutes).
	activityEvery = 5 * time.Second
)

// Registry is what the gateway needs of the device registry.
type Registry interface {
	Keys(ctx context.Context, id string) (auth.DeviceKeys, error)
	RecordConnection(id string, state herd.ConnectionState, at time.Time)
	RecordActivity(id string, at time.Time)
}

// Authenticator verifies a device's SAS token.
type Authenticator interface {
	VerifyDevice(password, deviceID string, keys auth.DeviceKeys) (auth.DeviceAuth, error)
}

// Twins is what the gateway needs of the twin service.
type Twins interface {
	DeviceView(ctx context.Context, deviceID string) ([]byte, error)
	PatchReported(ctx context.Context, deviceID string, p twin.Patch) (int64, error)
}

// Methods receives devices' answers to direct methods.
type Methods interface {
	Respond(deviceID, rid string, status int, payload []byte) error
}

// EventSink receives telemetry; it must not block.
type EventSink func(*herd.Event)

// Config holds the gateway's dependencies and limits.
type Config struct {
	Host     string
	Auth     Authenticator
	Registry Registry
	Twins    Twins
	Methods  Methods
	Bus      *bus.Bus
	Sessions SessionStore
	Events   EventSink
	Clock    clock.Clock
	Log      *slog.Logger
	// Metrics, if not nil, receives the gateway's collectors.
	Metrics prometheus.Registerer
	// QueuePackets and QueueBytes bound each connection's outbound queue;
	// a device whose queue overflows is disconnected. Zero means 256
	// packets and 1 MiB.
	QueuePackets int
	QueueBytes   int
}

// Server accepts device connections.
type Server struct {
	cfg      Config
	sessions *sessions
	m        *metrics

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// New returns a gateway. Serve listeners on it and Run it.
func New(cfg Config) *Server {
	if cfg.QueuePackets == 0 {
		cfg.QueuePackets = 256
	}
	if cfg.QueueBytes == 0 {
		cfg.QueueBytes = 1 << 20
	}
	if cfg.Events == nil {
		cfg.Events = func(*herd.Event) {}
	}
	s := &Server{
		cfg:       cfg,
		sessions:  newSessions(cfg.Sessions),
		m:         newMetrics(cfg.Metrics, cfg.Bus),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	return s
}

// Connected is the number of devices connected now.
func (s *Server) Connected() int64 { return s.cfg.Bus.Connected() }

// Run persists session changes until ctx ends, then closes listeners and
// connections and writes what is left.
func (s *Server) Run(ctx context.Context) error {
	err := s.sessions.run(ctx, s.cfg.Log)
	s.shutdown()
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if ferr := s.sessions.flush(final); ferr != nil {
		err = errors.Join(err, ferr)
	}
	return err
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.close(reasonShutdown)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Serve accepts connections on l until l is closed or the server stops.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		delay = 0
		go s.accept(nc)
	}
}

// ServeConn runs the MQTT protocol on one connection and returns when the
// connection has ended (the WebSocket handler calls it; its goroutine is
// the connection's reader).
func (s *Server) ServeConn(nc net.Conn) {
	c := s.track(nc)
	if c == nil {
		return
	}
	r, keepAlive, ok := c.handshake()
	if !ok {
		s.untrack(c)
		return
	}
	c.run(r, keepAlive)
	s.untrack(c)
}

// accept runs the handshake of a TCP or TLS connection and, on success,
// starts its reader on a fresh goroutine (with a small stack) and returns.
func (s *Server) accept(nc net.Conn) {
	c := s.track(nc)
	if c == nil {
		return
	}
	r, keepAlive, ok := c.handshake()
	if !ok {
		s.untrack(c)
		return
	}
	go func() {
		c.run(r, keepAlive)
		s.untrack(c)
	}()
}

func (s *Server) track(nc net.Conn) *conn {
	c := newConn(s, nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		nc.Close()
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// DeviceChanged is called by the registry after a device was updated or
// deleted: a connected device that was deleted or disabled, or whose key
// that signed its token was replaced, is disconnected.
func (s *Server) DeviceChanged(deviceID string) {
	s.sessions.forget(deviceID)
	bc := s.cfg.Bus.Lookup(deviceID)
	if bc == nil {
		return
	}
	c, ok := bc.(*conn)
	if !ok {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.recheck(ctx)
	}()
}

// recheck closes the connection if its device was deleted or disabled, or
// if the key that signed its token is no longer one of the device's keys.
func (c *conn) recheck(ctx context.Context) {
	keys, err := c.s.cfg.Registry.Keys(ctx, c.deviceID)
	switch {
	case herd.IsCode(err, herd.ErrDeviceNotFound):
		c.close(reasonDeleted)
	case err != nil:
		c.s.cfg.Log.Error("recheck device after registry change", "device_id", c.deviceID, "err", err)
	case !keys.Enabled:
		c.close(reasonDisabled)
	case c.key != "" && c.key != keys.PrimaryKey && c.key != keys.SecondaryKey:
		c.close(reasonKeyChanged)
	}
}
