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
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/certauth"
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
	// refuseWait is how long a socket over MaxConnections may take to send
	// its CONNECT before it is closed without CONNACK.
	refuseWait = 2 * time.Second
	// maxRefusing bounds the sockets over MaxConnections held at once to
	// answer them CONNACK 3; further ones are closed at once.
	maxRefusing = 64
	// maxAcceptDelay caps the backoff after a failed accept.
	maxAcceptDelay = time.Second
	// activityEvery limits how often one connection records activity
	// (lastActivityTime is that precise; Azure's lags by minutes).
	activityEvery = 5 * time.Second
)

// Registry is what the gateway needs of the device registry.
type Registry interface {
	Keys(ctx context.Context, id string) (auth.DeviceKeys, error)
	// RecordConnection notes a connect or disconnect; epoch is the
	// connection's (Presence), 0 on a node alone.
	RecordConnection(id string, state herd.ConnectionState, at time.Time, epoch int64)
	RecordActivity(id string, at time.Time)
}

// Presence orders a device's connections across the nodes of a cluster:
// Claim records the device's connection as this node's and returns its
// epoch, higher than any connection of the device before it, on any
// node; herd.ErrDeviceNotFound (or ErrModuleNotFound) if the device is
// not registered. The gateway claims before CONNACK; takeovers and the
// writes about the connection (its state, its session) carry the epoch,
// so a node the device has left can neither close its newer connection
// nor overwrite what the newer one wrote. A claim that may have been
// recorded is returned even after ctx ends (the gateway then records the
// connection Disconnected).
type Presence interface {
	Claim(ctx context.Context, id string) (epoch int64, err error)
}

// Authenticator verifies a device's SAS token.
type Authenticator interface {
	VerifyDevice(password, deviceID string, keys auth.DeviceKeys) (auth.DeviceAuth, error)
}

// Certificates authenticates devices with X.509 client certificates
// (internal/certauth.Service).
type Certificates interface {
	Authenticate(ctx context.Context, deviceID string, keys auth.DeviceKeys, chain []*x509.Certificate) (certauth.Result, error)
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
	// MaxConnections bounds the device sockets open at once (TCP, TLS and
	// WebSocket, counted from accept, before CONNECT), so that the hub
	// refuses devices cleanly instead of running out of file descriptors.
	// A socket over the bound is answered CONNACK 3 (server unavailable)
	// and closed. Zero means no bound. Connections given to ServeConn
	// (in-memory transports) are not sockets and are not counted.
	MaxConnections int
	// Certificates authenticates selfSigned and certificateAuthority
	// devices with their TLS client certificates; nil refuses them.
	Certificates Certificates
	// Attached, if not nil, is told that a device (or module) connected
	// here at at with epoch (0 without Presence), once it holds its place
	// on the bus: in a cluster the other nodes close its older connections
	// (TakenOver).
	Attached func(id string, at time.Time, epoch int64)
	// Presence, in a cluster, claims each connection before its CONNACK;
	// nil on a node alone.
	Presence Presence
}

// Server accepts device connections.
type Server struct {
	cfg      Config
	sessions *sessions
	m        *metrics

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	// sockets counts the connections in conns that are sockets (bounded by
	// MaxConnections); refusing holds those over the bound being refused.
	sockets  int
	refusing map[*conn]struct{}
	// certConns are the connected devices that authenticated with a
	// certificate (CertificatesChanged checks them again).
	certConns map[*conn]struct{}
	// moduleConns are the connected modules, by device id: a change of
	// the device (deleted, disabled) checks them too.
	moduleConns map[string]map[*conn]struct{}
	closed      bool
	done        chan struct{} // closed with closed
	// refuseListeners: StopAccepting was called.
	refuseListeners bool
	wg              sync.WaitGroup
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
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		refusing:  map[*conn]struct{}{},
		certConns: map[*conn]struct{}{}, moduleConns: map[string]map[*conn]struct{}{},
		done: make(chan struct{}),
	}
	s.m = newMetrics(cfg.Metrics, cfg.Bus, s.openSockets)
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

// StopAccepting closes the listeners, and Serve refuses any listener from
// now on; the devices connected stay connected until Run's context ends
// (a hub that drains).
func (s *Server) StopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseListeners = true
	for l := range s.listeners {
		l.Close()
	}
}

func (s *Server) shutdown() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.close(reasonShutdown)
	}
	for c := range s.refusing {
		c.close(reasonShutdown)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// openSockets is the number of device sockets open now.
func (s *Server) openSockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sockets
}

// Serve accepts connections on l until l is closed or the server stops.
// Accept errors that pass (out of file descriptors or buffers, a
// connection aborted before it was accepted) are retried with a backoff
// of 5 ms doubling to 1 s, as net/http does, and logged once per burst;
// any other error is returned.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed || s.refuseListeners {
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
	var (
		delay      time.Duration
		logged     time.Time // when a burst was last logged
		suppressed int       // bursts not logged since
	)
	for {
		nc, err := l.Accept()
		if err == nil {
			delay = 0
			go s.accept(nc)
			continue
		}
		select {
		case <-s.done:
			return nil
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if !temporaryAccept(err) {
			return err
		}
		s.m.acceptErrors.Inc()
		if delay == 0 { // a burst begins; log it, at most once a minute
			if now := time.Now(); now.Sub(logged) >= time.Minute {
				s.cfg.Log.Warn("accepting device connections failed; retrying with backoff "+
					"(raise the open-file limit or lower --max-connections)",
					"op", "accept", "addr", l.Addr().String(), "err", err, "bursts_not_logged", suppressed)
				logged, suppressed = now, 0
			} else {
				suppressed++
			}
		}
		delay = min(max(2*delay, 5*time.Millisecond), maxAcceptDelay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			return nil
		}
	}
}

// temporaryAccept reports whether an accept error passes: the process or
// system is out of file descriptors (EMFILE, ENFILE) or memory (ENOBUFS,
// ENOMEM), or the peer gave up before it was accepted (ECONNABORTED), or
// the error says it is temporary (timeouts, EINTR, and on Windows the WSA
// equivalents). Only a closed or broken listener stops Serve.
func temporaryAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// ServeConn runs the MQTT protocol on one connection and returns when the
// connection has ended; the calling goroutine is the connection's reader.
// It is for in-memory transports (net.Pipe): such connections are not
// counted against MaxConnections.
func (s *Server) ServeConn(nc net.Conn) { s.serveConn(nc, false) }

// serveConn is ServeConn; socket says whether nc counts against
// MaxConnections (the WebSocket handler's connections do).
func (s *Server) serveConn(nc net.Conn, socket bool) {
	c := s.track(nc, socket)
	if c == nil {
		return
	}
	r, keepAlive, ok := c.handshake()
	if !ok {
		s.untrack(c)
		return
	}
	c.read(&reading{r: r, keepAlive: keepAlive}, false)
}

// accept runs the handshake of a TCP or TLS connection and, on success,
// starts its reader on a fresh goroutine (with a small stack: see
// conn.read) and returns.
func (s *Server) accept(nc net.Conn) {
	c := s.track(nc, true)
	if c == nil {
		return
	}
	r, keepAlive, ok := c.handshake()
	if !ok {
		s.untrack(c)
		return
	}
	go c.read(&reading{r: r, keepAlive: keepAlive}, true)
}

// track registers a new connection and returns it, or returns nil after
// closing nc when the server has stopped, or after refusing it when nc is
// a socket and MaxConnections sockets are open.
func (s *Server) track(nc net.Conn, socket bool) *conn {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return nil
	}
	if socket && s.cfg.MaxConnections > 0 && s.sockets >= s.cfg.MaxConnections {
		s.m.overCapacity.Inc()
		if len(s.refusing) >= min(maxRefusing, max(1, s.cfg.MaxConnections/16)) {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.refusing[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		c.refuseFull()
		// The place is free before the device can see the socket close,
		// so that its next attempt is answered, not dropped.
		s.mu.Lock()
		delete(s.refusing, c)
		s.mu.Unlock()
		c.close(reasonFull)
		s.wg.Done()
		return nil
	}
	c.socket = socket
	if socket {
		s.sockets++
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	return c
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.socket {
		s.sockets--
	}
	s.mu.Unlock()
	s.wg.Done()
}

// DeviceChanged is called by the registry after a device was updated or
// deleted: a connected device that was deleted or disabled, or whose key
// that signed its token was replaced, is disconnected.
func (s *Server) DeviceChanged(deviceID string) {
	s.sessions.forget(deviceID)
	var cs []*conn
	if c, ok := s.cfg.Bus.Lookup(deviceID).(*conn); ok && c != nil {
		cs = append(cs, c)
	}
	if _, mod := herd.SplitIdentity(deviceID); mod == "" {
		s.mu.Lock()
		for c := range s.moduleConns[deviceID] {
			cs = append(cs, c)
		}
		s.mu.Unlock()
	}
	if len(cs) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, c := range cs {
			c.recheck(ctx)
		}
	}()
}

// ConnectionEpoch returns the epoch of a device's (or module's)
// connection here, 0 if it has none or is not connected here.
func (s *Server) ConnectionEpoch(id string) int64 {
	if c, ok := s.cfg.Bus.Lookup(id).(*conn); ok && c != nil {
		return c.epoch
	}
	return 0
}

// SessionsGeneration and LearnSessions let a store read of devices' keys
// that also reads their persistent sessions (registry.Service.ReadKeysWith)
// spare their connects a session read of their own: take the generation
// before the read, then give LearnSessions the devices read and the
// sessions of those that have one. What changed here meanwhile is kept.
func (s *Server) SessionsGeneration() uint64 { return s.sessions.generation() }

// LearnSessions: see SessionsGeneration.
func (s *Server) LearnSessions(gen uint64, ids []string, subs map[string]bus.Feature) {
	s.sessions.learn(gen, ids, subs)
}

// TakenOver closes the connection of a device (or module) here if it is
// older than the one the device made to another node of the cluster, at
// at with epoch: that node now holds it. Epochs order the connections
// when both have one (Presence); otherwise their connect times do. What
// is remembered of its session is forgotten unless its connection here is
// the newer one.
func (s *Server) TakenOver(id string, at time.Time, epoch int64) {
	c, ok := s.cfg.Bus.Lookup(id).(*conn)
	if ok && c != nil && c.newerThan(at, epoch) {
		return // the connection here is the newer one
	}
	// The device's session now changes on the other node: what is
	// remembered here would be stale if the device came back.
	s.sessions.forget(id)
	if !ok || c == nil {
		return
	}
	s.cfg.Log.Info("device connected to another node; closing its connection here", "device_id", id, "op", "takeover")
	c.close(reasonTakeover)
}

// trackModule adds (or removes) a module's connection to those its
// device's changes check.
func (s *Server) trackModule(c *conn, add bool) {
	dev, _ := herd.SplitIdentity(c.deviceID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.moduleConns[dev] == nil {
			s.moduleConns[dev] = map[*conn]struct{}{}
		}
		s.moduleConns[dev][c] = struct{}{}
		return
	}
	delete(s.moduleConns[dev], c)
	if len(s.moduleConns[dev]) == 0 {
		delete(s.moduleConns, dev)
	}
}

// CertificatesChanged is called by the CA certificate service after a CA
// was verified, replaced or deleted: every device connected with a
// certificate is checked again, and those whose chain no longer ends at a
// verified CA are disconnected.
func (s *Server) CertificatesChanged() {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.certConns))
	for c := range s.certConns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	if len(cs) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, c := range cs {
			c.recheck(ctx)
		}
	}()
}

// trackCertificate adds c to (or removes it from) the connections that
// authenticated with a certificate.
func (s *Server) trackCertificate(c *conn, add bool) {
	s.mu.Lock()
	if add {
		s.certConns[c] = struct{}{}
	} else {
		delete(s.certConns, c)
	}
	s.mu.Unlock()
}

// recheck closes the connection if its device was deleted or disabled, if
// the key that signed its token is no longer one of the device's keys, if
// it now authenticates with a certificate, or if the certificate it
// connected with no longer passes (thumbprints changed, CA no longer
// verified, authentication type changed).
func (c *conn) recheck(ctx context.Context) {
	keys, err := c.s.cfg.Registry.Keys(ctx, c.deviceID)
	switch {
	case herd.IsCode(err, herd.ErrDeviceNotFound), herd.IsCode(err, herd.ErrModuleNotFound):
		c.close(reasonDeleted)
	case err != nil:
		c.s.cfg.Log.Error("recheck device after registry change", "device_id", c.deviceID, "err", err)
	case !keys.Enabled:
		c.close(reasonDisabled)
	case c.chain != nil:
		if !keys.UsesCertificate() {
			c.s.cfg.Log.Info("device no longer authenticates with a certificate; disconnecting", "device_id", c.deviceID, "op", reasonCertChanged)
			c.close(reasonCertChanged)
			return
		}
		_, err := c.s.cfg.Certificates.Authenticate(ctx, c.deviceID, keys, c.chain)
		switch {
		case herd.ErrorCodeOf(err) == herd.ErrInternal:
			c.s.cfg.Log.Error("recheck device certificate", "device_id", c.deviceID, "err", err)
		case err != nil:
			c.s.cfg.Log.Info("device certificate no longer accepted; disconnecting", "device_id", c.deviceID,
				"op", reasonCertChanged, "err", herd.ErrorMessage(err))
			c.close(reasonCertChanged)
		}
	case keys.UsesCertificate() || keys.Type == herd.AuthNone:
		c.close(reasonKeyChanged)
	case c.key != "" && c.key != keys.PrimaryKey && c.key != keys.SecondaryKey:
		c.close(reasonKeyChanged)
	}
}
