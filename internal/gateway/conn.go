package gateway

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// Why a connection ended (the reason label of herd_mqtt_disconnects_total).
const (
	reasonClient       = "client_disconnect"
	reasonLost         = "connection_lost"
	reasonTakeover     = "takeover"
	reasonTokenExpired = "token_expired"
	reasonDeleted      = "device_deleted"
	reasonDisabled     = "device_disabled"
	reasonKeyChanged   = "key_changed"
	reasonCertExpired  = "certificate_expired"
	reasonCertChanged  = "certificate_not_accepted"
	reasonSlow         = "queue_overflow"
	reasonWriteFailed  = "write_failed"
	reasonProtocol     = "protocol_violation"
	reasonTooLarge     = "message_too_large"
	reasonForbidden    = "forbidden_topic"
	reasonKeepAlive    = "keepalive_timeout"
	reasonShutdown     = "shutdown"
	reasonFull         = "max_connections"
	reasonUnsaved      = "session_not_saved"
)

// conn is one device connection. The reader goroutine (serve) owns the
// fields above mu; the outbound queue and closed state are guarded by mu.
// Lock order: a conn's mu is never held while calling into the bus or
// another conn.
type conn struct {
	s        *Server
	nc       net.Conn
	deviceID string // the connection identity: a device id, or {deviceId}/{moduleId}
	module   bool   // deviceID names a module
	// key is the device key that signed the token ("" for a policy).
	key string
	// chain is the client certificate chain that authenticated a
	// selfSigned or certificateAuthority device (nil for SAS), checked
	// again when the device or the CA certificates change.
	chain  []*x509.Certificate
	clean  bool
	will   *packets.PublishPacket
	expiry clock.Timer
	// raw is the socket of a plain TCP connection, for writes that do not
	// wait (nil for TLS, WebSocket and in-memory connections, and on
	// systems without the fast path: see conn_unix.go).
	raw      syscall.RawConn
	activity time.Time
	// connectedAt is when its CONNECT was accepted, and epoch what
	// Presence gave it (0 without): both set before it is on the bus.
	connectedAt time.Time
	epoch       int64
	// socket says whether the connection counts against MaxConnections.
	socket   bool
	features atomic.Uint32

	mu      sync.Mutex
	queue   []outItem
	queued  int
	writing bool
	closed  bool
	reason  string
}

// outItem is one encoded packet waiting to be written.
type outItem struct {
	b       []byte
	sent    func()
	dropped func()
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{s: s, nc: nc, raw: rawSocket(nc)}
}

// Features implements bus.Conn.
func (c *conn) Features() bus.Feature { return bus.Feature(c.features.Load()) }

// SendDesired implements bus.Conn: §8.7 desired push, QoS 0.
func (c *conn) SendDesired(version int64, body []byte) {
	c.enqueue(encodePublish(DesiredTopic(version), body), nil, nil)
}

// SendMethod implements bus.Conn: §8.8 method request, QoS 0.
func (c *conn) SendMethod(mc *bus.MethodCall) bool {
	if !c.Features().Has(bus.Methods) {
		return false
	}
	return c.enqueue(encodePublish(MethodTopic(mc.Name, mc.RID), mc.Payload), mc.Sent, mc.Dropped)
}

func encodePublish(topic string, payload []byte) []byte {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName = topic
	p.Payload = payload
	return encode(p)
}

func encode(p packets.ControlPacket) []byte {
	var b bytes.Buffer
	_ = p.Write(&b) // writing to a bytes.Buffer cannot fail
	return b.Bytes()
}

// enqueue adds an encoded packet to the outbound queue and makes sure a
// writer is draining it. A full queue closes the connection: a device that
// does not read must not hold memory or slow its senders.
func (c *conn) enqueue(b []byte, sent, dropped func()) bool {
	c.mu.Lock()
	return c.enqueueLocked(b, sent, dropped)
}

// enqueueLocked is enqueue with c.mu held; it unlocks c.mu.
func (c *conn) enqueueLocked(b []byte, sent, dropped func()) bool {
	if c.closed {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= c.s.cfg.QueuePackets || c.queued+len(b) > c.s.cfg.QueueBytes {
		c.mu.Unlock()
		c.s.cfg.Log.Warn("device does not read its connection; disconnecting", "device_id", c.deviceID, "op", "send")
		c.close(reasonSlow)
		return false
	}
	if !c.writing && len(c.queue) == 0 && c.raw != nil {
		// Fast path: nothing queued, nobody writing, plain TCP: write
		// from this goroutine without blocking.
		c.writing = true
		c.mu.Unlock()
		c.writeNow(outItem{b: b, sent: sent, dropped: dropped})
		return true
	}
	c.queue = append(c.queue, outItem{b: b, sent: sent, dropped: dropped})
	c.queued += len(b)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.flush()
	}
	return true
}

// writeNow makes one non-blocking write of it (the caller holds the
// writing role). What the socket does not take goes to the front of the
// queue for the writer goroutine.
func (c *conn) writeNow(it outItem) {
	n, err := c.tryWrite(it.b)
	if err != nil {
		c.close(reasonWriteFailed)
		if it.dropped != nil {
			it.dropped()
		}
		c.mu.Lock()
		c.writing = false
		c.mu.Unlock()
		return
	}
	if n == len(it.b) {
		if it.sent != nil {
			it.sent()
		}
		c.mu.Lock()
		if len(c.queue) > 0 && !c.closed {
			c.mu.Unlock()
			go c.flush()
			return
		}
		c.writing = false
		c.mu.Unlock()
		return
	}
	it.b = it.b[n:]
	c.mu.Lock()
	if c.closed {
		c.writing = false
		c.mu.Unlock()
		if it.dropped != nil {
			it.dropped()
		}
		return
	}
	c.queue = append([]outItem{it}, c.queue...)
	c.queued += len(it.b)
	c.mu.Unlock()
	go c.flush()
}

// flush writes queued packets until the queue is empty, batching what
// accumulated into one write. It runs only while there is something to
// write, so an idle connection has no writer goroutine.
func (c *conn) flush() {
	var batch []byte
	for {
		c.mu.Lock()
		items := c.queue
		c.queue, c.queued = nil, 0
		if len(items) == 0 || c.closed {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		data := items[0].b
		if len(items) > 1 {
			batch = batch[:0]
			for _, it := range items {
				batch = append(batch, it.b...)
			}
			data = batch
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeWait))
		if _, err := c.nc.Write(data); err != nil {
			c.close(reasonWriteFailed)
			for _, it := range items {
				if it.dropped != nil {
					it.dropped()
				}
			}
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			return
		}
		// The deadline bounded this write only: left in place it would
		// fail the next direct write (tryWrite goes through the same
		// poller) once it passed, long after this flush.
		_ = c.nc.SetWriteDeadline(time.Time{})
		for _, it := range items {
			if it.sent != nil {
				it.sent()
			}
		}
	}
}

// close ends the connection once; queued packets are dropped.
func (c *conn) close(reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.reason = reason
	q := c.queue
	c.queue, c.queued = nil, 0
	c.mu.Unlock()
	// An expired deadline makes a blocked write fail at once, so that
	// closing a TLS connection does not wait for it.
	_ = c.nc.SetDeadline(time.Now())
	_ = c.nc.Close()
	for _, it := range q {
		if it.dropped != nil {
			it.dropped()
		}
	}
}

func (c *conn) closeReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

func (c *conn) send(p packets.ControlPacket) { c.enqueue(encode(p), nil, nil) }

// refuseFull turns away a socket over MaxConnections: it reads the CONNECT
// (for at most refuseWait), answers CONNACK 3 "server unavailable", which
// the SDKs treat as retryable (§8.9); the caller closes it. A socket that sends no
// CONNECT in time, or a larger one than a device sends, is closed without
// CONNACK. The CONNECT is read in full first: closing a socket with unread
// input resets it, and the device could lose the CONNACK.
func (c *conn) refuseFull() {
	r := &packetReader{src: c.nc, max: refuseMaxPacket}
	defer r.release()
	_ = c.nc.SetReadDeadline(time.Now().Add(refuseWait))
	pkt, err := r.next()
	if _, ok := pkt.(*packets.ConnectPacket); ok && err == nil {
		ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
		ack.ReturnCode = packets.ErrRefusedServerUnavailable
		_ = c.nc.SetWriteDeadline(time.Now().Add(refuseWait))
		_, _ = c.nc.Write(encode(ack))
	}
}

// refuseMaxPacket bounds the CONNECT read from a socket that is refused:
// a device's CONNECT (ids, user name, token, a small Will) fits.
const refuseMaxPacket = 16 * 1024

// handshake reads and answers CONNECT. On success the caller runs the
// connection with run.
func (c *conn) handshake() (r *packetReader, keepAlive time.Duration, ok bool) {
	r = &packetReader{src: c.nc, max: MaxPacket}
	_ = c.nc.SetReadDeadline(time.Now().Add(connectWait))
	pkt, err := r.next()
	if errors.Is(err, errMalformed) {
		c.s.cfg.Log.Info("malformed CONNECT", "op", "connect", "err", err)
		c.close(reasonProtocol)
		return nil, 0, false
	}
	if err != nil {
		c.close(reasonLost)
		return nil, 0, false
	}
	cp, ok := pkt.(*packets.ConnectPacket)
	if !ok {
		c.s.cfg.Log.Debug("first packet is not CONNECT", "op", "connect")
		c.close(reasonProtocol)
		return nil, 0, false
	}
	keepAlive, ok = c.connect(cp)
	if !ok {
		c.s.m.connects.WithLabelValues("refused").Inc()
		return nil, 0, false
	}
	c.s.m.connects.WithLabelValues("accepted").Inc()
	return r, keepAlive, true
}

// reading is a connection's read loop's state, which passes from one
// goroutine to the next (see read).
type reading struct {
	r         *packetReader
	keepAlive time.Duration
	deadline  time.Time
}

// read runs the connection's read loop until the connection ends, then
// cleans up after it.
//
// With hop, once a packet is handled and nothing more has arrived, the
// loop goes on in a fresh goroutine and this one ends. Handling a packet
// (a SUBSCRIBE's session write, a twin request, a log line) grows the
// goroutine's stack to 4 KB or more, and the garbage collector halves a
// stack only when less than a quarter of it is in use, counting an 800
// byte reserve as in use (runtime.shrinkstack): a waiting connection's
// 4 KB stack is never halved, and every idle connection would hold it. A
// fresh goroutine waits on what the wait itself needs: 2 KB on a plain
// socket, 2 KB less per idle connection (see docs/benchmarks.md); 4 KB
// through TLS, whose read path is deeper, but never what the deepest
// packet so far grew. The cost is one goroutine start per burst of
// packets.
//
// Without hop (WebSocket and in-memory connections, whose reader is their
// caller's goroutine) the loop stays where it is.
func (c *conn) read(rd *reading, hop bool) {
	for {
		// The read deadline is moved forward only when an eighth of it
		// has passed, not on every packet: a busy device then costs no
		// timer update per packet, and a silent one is still cut off after
		// 7/8 to 1 times the limit (never before 1.3 × its keep-alive).
		if now := time.Now(); rd.deadline.Sub(now) < rd.keepAlive*7/8 {
			rd.deadline = now.Add(rd.keepAlive)
			_ = c.nc.SetReadDeadline(rd.deadline)
		}
		if err := rd.r.idle(); err != nil {
			c.readFailed(err)
			break
		}
		if !c.step(rd.r) {
			break
		}
		if hop && !rd.r.buffered() {
			go c.read(rd, true)
			return
		}
	}
	rd.r.release()
	c.ended()
	c.s.untrack(c)
}

// step reads and handles the packet that has begun to arrive; false ends
// the connection.
func (c *conn) step(r *packetReader) bool {
	pkt, err := r.next()
	if err != nil {
		c.readFailed(err)
		return false
	}
	c.touch()
	return c.handle(pkt)
}

// readFailed closes the connection after a failed read, with the reason.
func (c *conn) readFailed(err error) {
	reason := reasonLost
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout() && c.closeReason() == "":
		reason = reasonKeepAlive
	case errors.Is(err, errTooLarge):
		c.s.cfg.Log.Warn("packet too large; disconnecting", "device_id", c.deviceID, "err", err)
		reason = reasonProtocol
	case errors.Is(err, errMalformed):
		c.s.cfg.Log.Warn("device broke the protocol; disconnecting", "device_id", c.deviceID, "op", reasonProtocol, "err", err)
		reason = reasonProtocol
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && c.closeReason() == "":
		c.s.cfg.Log.Debug("read failed", "device_id", c.deviceID, "err", err)
	}
	c.close(reason)
}

// touch records activity, at most once per activityEvery (5 s) per connection.
func (c *conn) touch() {
	now := c.s.cfg.Clock.Now()
	if now.Sub(c.activity) >= activityEvery {
		c.activity = now
		c.s.cfg.Registry.RecordActivity(c.deviceID, now)
	}
}

// ended cleans up after the connection is gone.
func (c *conn) ended() {
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if c.chain != nil {
		c.s.trackCertificate(c, false)
	}
	if c.module {
		c.s.trackModule(c, false)
	}
	reason := c.closeReason()
	c.s.sessions.release(c.deviceID, c)
	if c.s.cfg.Bus.Detach(c.deviceID, c) {
		c.s.cfg.Registry.RecordConnection(c.deviceID, herd.Disconnected, c.s.cfg.Clock.Now(), c.epoch)
	}
	if c.will != nil && reason != reasonClient {
		c.sendWill()
	}
	c.s.m.disconnects.WithLabelValues(reason).Inc()
	c.s.cfg.Log.Debug("device disconnected", "device_id", c.deviceID, "op", reason)
}

// handle processes one packet after CONNECT; false ends the connection.
func (c *conn) handle(pkt packets.ControlPacket) bool {
	switch p := pkt.(type) {
	case *packets.PublishPacket:
		return c.publish(p)
	case *packets.SubscribePacket:
		return c.subscribe(p)
	case *packets.UnsubscribePacket:
		return c.unsubscribe(p)
	case *packets.PingreqPacket:
		c.send(packets.NewControlPacket(packets.Pingresp))
		return true
	case *packets.PubackPacket:
		return true // acknowledgement of a QoS 1 delivery
	case *packets.DisconnectPacket:
		c.close(reasonClient)
		return false
	}
	c.violation(reasonProtocol, "unexpected "+pkt.String())
	return false
}

// violation closes the connection for breaking the dialect and logs why.
func (c *conn) violation(reason, what string) {
	c.s.cfg.Log.Warn("device broke the protocol; disconnecting", "device_id", c.deviceID, "op", reason, "err", what)
	c.close(reason)
}

// publish handles a device's PUBLISH (§8.7, §8.10, §8.11).
func (c *conn) publish(p *packets.PublishPacket) bool {
	if p.Qos > 1 {
		c.violation(reasonProtocol, "QoS 2 publish to "+p.TopicName)
		return false
	}
	t, err := ParseTopic(c.deviceID, p.TopicName)
	if err != nil {
		c.violation(reasonForbidden, err.Error())
		return false
	}
	switch t.Kind {
	case KindTelemetry:
		if !c.telemetry(t, p) {
			return false
		}
	case KindTwinGet:
		aside(func() { c.twinGet(t.RID) })
	case KindTwinReported:
		aside(func() { c.twinReported(t.RID, p.Payload) })
	case KindMethodResponse:
		if err := c.s.cfg.Methods.Respond(c.deviceID, t.RID, t.Status, p.Payload); err != nil {
			c.s.cfg.Log.Debug("method response ignored", "device_id", c.deviceID, "err", err)
		}
	}
	if p.Qos == 1 {
		ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
		ack.MessageID = p.MessageID
		c.send(ack)
	}
	return true
}

// telemetry turns a device-to-cloud message into an event (§8.10). A body
// over MaxTelemetry closes the connection, as Azure does.
func (c *conn) telemetry(t Topic, p *packets.PublishPacket) bool {
	if len(p.Payload) > MaxTelemetry {
		c.violation(reasonTooLarge, fmt.Sprintf("telemetry body of %d bytes (limit %d)", len(p.Payload), MaxTelemetry))
		return false
	}
	bag, err := ParseBag(t.Bag)
	if err != nil {
		c.violation(reasonForbidden, err.Error())
		return false
	}
	c.s.m.telemetry.Inc()
	c.s.m.telemetryBytes.Add(float64(len(p.Payload)))
	c.s.cfg.Events(c.event(bag, p.Payload, p.Retain))
	return true
}

func (c *conn) event(bag Bag, body []byte, retain bool) *herd.Event {
	sys := bag.System
	if sys == nil {
		sys = map[string]string{}
	}
	dev, mod := herd.SplitIdentity(c.deviceID)
	sys["$.cdid"] = dev
	if mod != "" {
		sys["$.cmid"] = mod
	}
	app := bag.Application
	if retain {
		if app == nil {
			app = map[string]string{}
		}
		app["mqtt-retain"] = "true"
	}
	return &herd.Event{
		DeviceID: dev, ModuleID: mod, EnqueuedTime: herd.NewTime(c.s.cfg.Clock.Now()),
		SystemProperties: sys, Properties: app, Body: body,
	}
}

// sendWill forwards the device's Will as telemetry (§8.5).
func (c *conn) sendWill() {
	t, err := ParseTopic(c.deviceID, c.will.TopicName)
	if err != nil || t.Kind != KindTelemetry {
		return
	}
	bag, err := ParseBag(t.Bag)
	if err != nil {
		return
	}
	if bag.Application == nil {
		bag.Application = map[string]string{}
	}
	bag.Application["iothub-MessageType"] = "Will"
	c.s.m.telemetry.Inc()
	c.s.cfg.Events(c.event(bag, c.will.Payload, false))
}

// opContext bounds one twin operation.
func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// aside runs fn on a short-lived goroutine and waits for it. Twin
// operations go through the store, whose call chains are deep; running
// them aside keeps the reader goroutine's stack small for when the device
// is idle again. The device's requests stay in order.
func aside(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

// twinGet answers $iothub/twin/GET with the device view of the twin.
func (c *conn) twinGet(rid string) {
	ctx, cancel := opContext()
	defer cancel()
	body, err := c.s.cfg.Twins.DeviceView(ctx, c.deviceID)
	if err != nil {
		c.twinError(rid, err)
		return
	}
	c.enqueue(encodePublish(TwinResponseTopic(200, rid, 0), body), nil, nil)
}

// twinReported applies a reported-properties patch and answers 204 with
// the new version, empty body (§8.7).
func (c *conn) twinReported(rid string, body []byte) {
	p, err := twin.ParseReported(body)
	if err != nil {
		c.twinError(rid, err)
		return
	}
	ctx, cancel := opContext()
	defer cancel()
	v, err := c.s.cfg.Twins.PatchReported(ctx, c.deviceID, p)
	if err != nil {
		c.twinError(rid, err)
		return
	}
	c.enqueue(encodePublish(TwinResponseTopic(204, rid, v), nil), nil, nil)
}

// twinError answers a twin request with an error status and a JSON body
// with errorCode and message (§8.7: the SDKs fail the call on errorCode).
func (c *conn) twinError(rid string, err error) {
	code := herd.ErrorCodeOf(err)
	if code == herd.ErrInternal {
		c.s.cfg.Log.Error("twin request failed", "device_id", c.deviceID, "err", err)
	}
	status, number := mqttOutcome(code)
	body := errorBody(number, herd.ErrorMessage(err))
	c.enqueue(encodePublish(TwinResponseTopic(status, rid, 0), body), nil, nil)
}

// subscribe handles SUBSCRIBE: only the filters of §8.6; QoS granted is at
// most 1. Any other filter disconnects the device (§8.11).
func (c *conn) subscribe(p *packets.SubscribePacket) bool {
	add := bus.Feature(0)
	granted := make([]byte, len(p.Topics))
	for i, f := range p.Topics {
		feat, err := ParseFilter(c.deviceID, f)
		if err != nil {
			c.violation(reasonForbidden, err.Error())
			return false
		}
		add |= feat
		granted[i] = min(p.Qoss[i], 1)
	}
	ack := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
	ack.MessageID = p.MessageID
	ack.ReturnCodes = granted
	return c.setFeatures(c.Features()|add, encode(ack))
}

func (c *conn) unsubscribe(p *packets.UnsubscribePacket) bool {
	remove := bus.Feature(0)
	for _, f := range p.Topics {
		if feat, err := ParseFilter(c.deviceID, f); err == nil {
			remove |= feat
		}
	}
	ack := packets.NewControlPacket(packets.Unsuback).(*packets.UnsubackPacket)
	ack.MessageID = p.MessageID
	return c.setFeatures(c.Features()&^remove, encode(ack))
}

// setFeatures records a new subscription set and queues the SUBACK (or
// UNSUBACK) ack. A clean-session-0 connection's set is written to the
// store first: an acknowledged subscription survives a crash of this node
// and a reconnect to another one (a connection whose set cannot be
// written within sessionSaveWait is closed instead, and the device
// subscribes again when it reconnects). The set and the ack then take
// effect in one step under the queue lock, so the acknowledgement is in
// effect when the device reads it and nothing routed by the new
// subscription overtakes it; then the bus is told.
func (c *conn) setFeatures(f bus.Feature, ack []byte) bool {
	if c.Features() != f && !c.clean {
		if !c.s.sessions.waitWritten(c.s.sessions.save(c.deviceID, f, c), sessionSaveWait, c.s.done) {
			select {
			case <-c.s.done:
				return false // shutting down: the connection is being closed
			default:
			}
			c.s.cfg.Log.Error("device session not saved; disconnecting", "device_id", c.deviceID, "op", "subscribe", "wait", sessionSaveWait)
			c.close(reasonUnsaved)
			return false
		}
	}
	c.mu.Lock()
	old := bus.Feature(c.features.Swap(uint32(f)))
	c.enqueueLocked(ack, nil, nil)
	if old != f {
		c.s.cfg.Bus.FeaturesChanged(c.deviceID, c)
	}
	return true
}

// validIdentity checks a CONNECT client id: a device id, or a module's
// identity "{deviceId}/{moduleId}" (herd.ModuleIdentity).
func validIdentity(clientID string) bool {
	dev, mod := herd.SplitIdentity(clientID)
	if registry.ValidateDeviceID(dev) != nil {
		return false
	}
	return !strings.Contains(clientID, "/") || registry.ValidateModuleID(mod) == nil
}

// newerThan says whether c is newer than another connection of its
// device, made at at with epoch: by epoch when both have one, else by
// connect time.
func (c *conn) newerThan(at time.Time, epoch int64) bool {
	if c.epoch != 0 && epoch != 0 {
		return c.epoch > epoch
	}
	return !c.connectedAt.Before(at)
}
