// Package sim owns simulated device fleets: N devices, each a real MQTT
// connection speaking the Azure IoT Hub device dialect (§8 of the
// compatibility reference), that answer direct methods (with a chosen
// latency and failure rate), apply desired properties and report them
// back, and optionally send telemetry. `herd sim`, `herd demo` and the
// benchmarks use it.
//
// A simulated device is deliberately lean — one connection, one reader
// goroutine, the paho packet codec — so that one process can drive ten
// thousand of them against a hub without becoming the bottleneck. It does
// not use the device SDK (which is tested on its own); it is a load
// generator that follows the same wire rules.
//
// Devices reach the hub through a Dialer: TCP (plain or TLS), WebSocket,
// or Pipe, the in-memory transport that hands each connection straight to
// a gateway in the same process, for benchmarks with more devices than
// one process may hold sockets.
package sim

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"golang.org/x/time/rate"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sas"
)

// Identity is a device the fleet connects as.
type Identity struct {
	ID  string
	Key string
}

// Config describes a fleet.
type Config struct {
	// Host is the hub's host name (user names and token sr).
	Host string
	// Dial opens connections. Nil means TCP(Addr, TLS).
	Dial Dialer
	// Addr is the MQTT address to dial when Dial is nil.
	Addr string
	// TLS, if not nil, makes TCP connections use TLS when Dial is nil.
	TLS *tls.Config
	// Devices are the identities to simulate.
	Devices []Identity
	// Concurrency bounds connection attempts in flight (default 256).
	Concurrency int
	// ConnectRate, if positive, limits connection attempts per second
	// (first connects and reconnects together).
	ConnectRate float64
	// Reconnect makes a device whose connection ends without Disconnect
	// (or whose first connect failed) connect again, with backoff from 1 s
	// to 30 s.
	Reconnect bool
	// Telemetry, if positive, is each device's interval between messages.
	Telemetry time.Duration
	// ReportDesired makes devices report each desired patch they apply as
	// reported properties (the same keys and values, without $version),
	// as a device that has applied its configuration does.
	ReportDesired bool
	// MethodStatus is the status devices answer methods with (default
	// 200); the answer's payload echoes the request's.
	MethodStatus int
	// MethodLatency is how long a device takes to answer a method.
	MethodLatency time.Duration
	// MethodFailureRate is the fraction (0–1) of method calls answered
	// with status 500 and {"error":"simulated failure"}.
	MethodFailureRate float64
	// MethodDropRate is the fraction (0–1) of method calls never
	// answered (the hub times them out).
	MethodDropRate float64
	// Clean asks for clean sessions (default false: persistent).
	Clean bool
	// TokenValidity is the lifetime of the devices' SAS tokens (default 1h).
	TokenValidity time.Duration
	// PeerTopics makes every device put PeerTopicPrefix(id) before each
	// $iothub topic it subscribes to and publishes on, so that a plain
	// MQTT broker, which routes by topic alone, reaches each device as Herd
	// does by connection: the same fleet then measures Herd and a peer
	// broker (go run ./bench --peers). Herd itself does not accept them.
	PeerTopics bool
	Log        *slog.Logger
	Now        func() time.Time
}

// Validate checks the configuration; its messages name the field.
func (c Config) Validate() error {
	switch {
	case c.Host == "":
		return errors.New("host: the hub's host name must not be empty")
	case c.Dial == nil && c.Addr == "":
		return errors.New("addr: give an MQTT address or a dialer")
	case c.MethodFailureRate < 0 || c.MethodFailureRate > 1:
		return fmt.Errorf("method failure rate %v: must be between 0 and 1", c.MethodFailureRate)
	case c.MethodDropRate < 0 || c.MethodDropRate > 1:
		return fmt.Errorf("method drop rate %v: must be between 0 and 1", c.MethodDropRate)
	case c.MethodFailureRate+c.MethodDropRate > 1:
		return errors.New("method failure rate + drop rate: must not exceed 1")
	case c.MethodLatency < 0:
		return errors.New("method latency: must not be negative")
	case c.ConnectRate < 0:
		return errors.New("connect rate: must not be negative")
	}
	return nil
}

// Stats counts what a fleet did.
type Stats struct {
	// Connected is how many devices hold a connection now.
	Connected int64
	// ConnectFailures counts failed connection attempts.
	ConnectFailures int64
	// Reconnects counts successful connects after the first.
	Reconnects int64
	// MethodsAnswered counts method calls answered (failures included).
	MethodsAnswered int64
	// MethodsFailed counts method calls answered with status 500.
	MethodsFailed int64
	// MethodsDropped counts method calls left unanswered on purpose.
	MethodsDropped int64
	// DesiredApplied counts desired patches received and applied.
	DesiredApplied int64
	// ReportedSent counts reported-property patches sent.
	ReportedSent int64
	// TelemetrySent counts telemetry messages sent.
	TelemetrySent int64
	// Disconnects counts connections that ended.
	Disconnects int64
	// Errors counts what went wrong after connecting: connections the
	// hub closed, failed writes, reported patches the hub refused.
	Errors int64
}

// Fleet is a set of simulated devices.
type Fleet struct {
	cfg     Config
	devices []*Device
	limiter *rate.Limiter
	stats   struct {
		connected, failures, reconnects, methods, methodsFailed, methodsDropped,
		desired, reported, telemetry, disconnects, errors atomic.Int64
	}
}

// New returns a fleet; nothing connects until Connect. It panics on a
// configuration that does not Validate (check it first with user input).
func New(cfg Config) *Fleet {
	if err := cfg.Validate(); err != nil {
		panic("sim: " + err.Error())
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.MethodStatus == 0 {
		cfg.MethodStatus = 200
	}
	if cfg.TokenValidity == 0 {
		cfg.TokenValidity = time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Dial == nil {
		cfg.Dial = TCP(cfg.Addr, cfg.TLS)
	}
	f := &Fleet{cfg: cfg, limiter: rate.NewLimiter(rate.Inf, 1)}
	if cfg.ConnectRate > 0 {
		f.limiter = rate.NewLimiter(rate.Limit(cfg.ConnectRate), max(1, int(cfg.ConnectRate/10)))
	}
	for _, id := range cfg.Devices {
		d := &Device{f: f, id: id}
		if cfg.PeerTopics {
			d.prefix = PeerTopicPrefix(id.ID)
		}
		f.devices = append(f.devices, d)
	}
	return f
}

// PeerTopicPrefix is what a device of a fleet with PeerTopics puts before
// its $iothub topics: "peer/{deviceId}/".
func PeerTopicPrefix(id string) string { return "peer/" + id + "/" }

// Stats returns the fleet's counters.
func (f *Fleet) Stats() Stats {
	s := &f.stats
	return Stats{
		Connected: s.connected.Load(), ConnectFailures: s.failures.Load(), Reconnects: s.reconnects.Load(),
		MethodsAnswered: s.methods.Load(), MethodsFailed: s.methodsFailed.Load(), MethodsDropped: s.methodsDropped.Load(),
		DesiredApplied: s.desired.Load(), ReportedSent: s.reported.Load(), TelemetrySent: s.telemetry.Load(),
		Disconnects: s.disconnects.Load(), Errors: s.errors.Load(),
	}
}

// Connect connects every device that is not connected — at most
// Concurrency attempts in flight, at most ConnectRate per second — and
// returns when every attempt has finished: nil if all connected, otherwise
// an error that counts the failures and gives the first. With Reconnect,
// the devices that failed keep trying in the background.
func (f *Fleet) Connect(ctx context.Context) error {
	sem := make(chan struct{}, f.cfg.Concurrency)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		first  error
	)
	for _, d := range f.devices {
		if d.Connected() {
			continue
		}
		d.want.Store(true)
		if err := f.limiter.Wait(ctx); err != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := d.Connect(ctx); err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = fmt.Errorf("connect %s: %w", d.id.ID, err)
				}
				mu.Unlock()
				d.retryLater(1)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d devices did not connect; first: %w", failed, len(f.devices), first)
	}
	return nil
}

// Disconnect disconnects every device (gracefully, with DISCONNECT) and
// stops their reconnecting.
func (f *Fleet) Disconnect() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, f.cfg.Concurrency)
	for _, d := range f.devices {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d.Disconnect()
		}()
	}
	wg.Wait()
}

// Device is one simulated device.
type Device struct {
	f      *Fleet
	id     Identity
	prefix string // before every $iothub topic (Config.PeerTopics)

	mu      sync.Mutex // guards conn, done and writes
	conn    net.Conn
	done    chan struct{}
	want    atomic.Bool // connected wanted: Connect sets it, Disconnect clears it
	ever    atomic.Bool // has connected once
	rid     atomic.Uint64
	expires atomic.Int64 // when the current connection's token expires (Unix ns)
}

// Connected reports whether the device holds a connection.
func (d *Device) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conn != nil
}

// Connect opens the device's connection (§8.2: CONNECT with the device's
// user name and a SAS token) and subscribes to methods, desired changes
// and twin responses unless the hub kept the session.
func (d *Device) Connect(ctx context.Context) error {
	d.want.Store(true)
	err := d.connect(ctx)
	if err != nil {
		d.f.stats.failures.Add(1)
	}
	return err
}

func (d *Device) connect(ctx context.Context) error {
	cfg := d.f.cfg
	nc, err := cfg.Dial(ctx)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	} else {
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	r := bufio.NewReaderSize(nc, 2048)
	if err := d.handshake(nc, r); err != nil {
		nc.Close()
		return err
	}
	_ = nc.SetDeadline(time.Time{})
	done := make(chan struct{})
	d.mu.Lock()
	if !d.want.Load() {
		// Disconnect came while this (re)connect was under way.
		d.mu.Unlock()
		_ = packets.NewControlPacket(packets.Disconnect).Write(nc)
		nc.Close()
		return nil
	}
	d.conn, d.done = nc, done
	d.mu.Unlock()
	d.f.stats.connected.Add(1)
	if d.ever.Swap(true) {
		d.f.stats.reconnects.Add(1)
	}
	go d.read(nc, r, done)
	if cfg.Telemetry > 0 {
		go d.telemetry(nc, done)
	}
	return nil
}

// handshake sends CONNECT and, without a kept session, SUBSCRIBE.
func (d *Device) handshake(nc net.Conn, r *bufio.Reader) error {
	cfg := d.f.cfg
	expires := cfg.Now().Add(cfg.TokenValidity)
	tok, err := sas.DeviceToken(cfg.Host, d.id.ID, "", d.id.Key, expires)
	if err != nil {
		return err
	}
	d.expires.Store(expires.UnixNano())
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.ClientIdentifier = d.id.ID
	cp.CleanSession = cfg.Clean
	cp.Keepalive = 0
	cp.UsernameFlag, cp.Username = true, cfg.Host+"/"+d.id.ID+"/?api-version="+herd.APIVersion+"&DeviceClientType=herd-sim"
	cp.PasswordFlag, cp.Password = true, []byte(tok)
	if err := cp.Write(nc); err != nil {
		return err
	}
	p, err := packets.ReadPacket(r)
	if err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	ack, ok := p.(*packets.ConnackPacket)
	if !ok {
		return fmt.Errorf("expected CONNACK, got %v", p)
	}
	if ack.ReturnCode != 0 {
		return fmt.Errorf("connection refused: %s", packets.ConnackReturnCodes[ack.ReturnCode])
	}
	if ack.SessionPresent {
		return nil
	}
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID = 1
	sp.Topics = []string{d.prefix + "$iothub/methods/POST/#", d.prefix + "$iothub/twin/PATCH/properties/desired/#", d.prefix + "$iothub/twin/res/#"}
	sp.Qoss = []byte{0, 0, 0}
	if err := sp.Write(nc); err != nil {
		return err
	}
	if p, err := packets.ReadPacket(r); err != nil {
		return fmt.Errorf("read SUBACK: %w", err)
	} else if _, ok := p.(*packets.SubackPacket); !ok {
		return fmt.Errorf("expected SUBACK, got %v", p)
	}
	return nil
}

// retryLater schedules a reconnect after a backoff for the attempt-th try
// (with Reconnect, while the device is wanted).
func (d *Device) retryLater(attempt int) {
	if !d.f.cfg.Reconnect || !d.want.Load() {
		return
	}
	backoff := min(time.Second<<min(attempt-1, 5), 30*time.Second)
	backoff = backoff/2 + rand.N(backoff/2+1)
	time.AfterFunc(backoff, func() {
		if !d.want.Load() || d.Connected() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.f.limiter.Wait(ctx); err != nil {
			d.retryLater(attempt + 1)
			return
		}
		if err := d.connect(ctx); err != nil {
			d.f.stats.failures.Add(1)
			d.f.cfg.Log.Debug("sim reconnect", "device_id", d.id.ID, "err", err)
			d.retryLater(attempt + 1)
		}
	})
}

// Disconnect sends DISCONNECT, closes the connection and stops the
// device's reconnecting.
func (d *Device) Disconnect() {
	d.want.Store(false)
	d.mu.Lock()
	nc, done := d.conn, d.done
	d.mu.Unlock()
	if nc == nil {
		return
	}
	_ = d.write(nc, packets.NewControlPacket(packets.Disconnect))
	nc.Close()
	<-done
}

// write sends one packet (writes are serialised per device).
func (d *Device) write(nc net.Conn, p packets.ControlPacket) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return p.Write(nc)
}

func (d *Device) publish(nc net.Conn, topic string, qos byte, payload []byte) error {
	pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pp.TopicName, pp.Qos, pp.Payload = topic, qos, payload
	if qos > 0 {
		pp.MessageID = uint16(d.rid.Add(1)%65535 + 1)
	}
	err := d.write(nc, pp)
	if err != nil && d.want.Load() {
		d.f.stats.errors.Add(1)
	}
	return err
}

// read handles what the hub sends until the connection ends.
func (d *Device) read(nc net.Conn, r *bufio.Reader, done chan struct{}) {
	defer func() {
		nc.Close()
		d.mu.Lock()
		if d.conn == nc {
			d.conn = nil
		}
		d.mu.Unlock()
		d.f.stats.connected.Add(-1)
		d.f.stats.disconnects.Add(1)
		close(done)
		if d.want.Load() {
			// The hub closed the connection (restart, key change, token
			// expiry): a reconnect if asked, and an error for the fleet
			// unless the token had expired, which is the hub's duty (§8.2).
			if d.f.cfg.Now().UnixNano() < d.expires.Load() {
				d.f.stats.errors.Add(1)
			}
			d.retryLater(1)
		}
	}()
	for {
		p, err := packets.ReadPacket(r)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				d.f.cfg.Log.Debug("sim device read", "device_id", d.id.ID, "err", err)
			}
			return
		}
		pp, ok := p.(*packets.PublishPacket)
		if !ok {
			continue
		}
		switch t := strings.TrimPrefix(pp.TopicName, d.prefix); {
		case strings.HasPrefix(t, "$iothub/methods/POST/"):
			d.answerMethod(nc, t, pp.Payload)
		case strings.HasPrefix(t, "$iothub/twin/PATCH/properties/desired/"):
			d.applyDesired(nc, pp.Payload)
		case strings.HasPrefix(t, "$iothub/twin/res/"):
			// §8.6: the answer to a reported patch; 2xx is success.
			status, _, _ := strings.Cut(strings.TrimPrefix(t, "$iothub/twin/res/"), "/")
			if !strings.HasPrefix(status, "2") {
				d.f.stats.errors.Add(1)
			}
		}
	}
}

// answerMethod answers $iothub/methods/POST/{name}/?$rid={rid} (§8.8) on
// $iothub/methods/res/{status}/?$rid={rid}, after MethodLatency, unless
// the call is one of the dropped fraction.
func (d *Device) answerMethod(nc net.Conn, topic string, payload []byte) {
	cfg := d.f.cfg
	_, rid, _ := strings.Cut(topic, "?$rid=")
	if i := strings.IndexByte(rid, '&'); i >= 0 {
		rid = rid[:i]
	}
	status := cfg.MethodStatus
	if cfg.MethodFailureRate > 0 || cfg.MethodDropRate > 0 {
		switch x := rand.Float64(); {
		case x < cfg.MethodDropRate:
			d.f.stats.methodsDropped.Add(1)
			return
		case x < cfg.MethodDropRate+cfg.MethodFailureRate:
			status = 500
			payload = []byte(`{"error":"simulated failure"}`)
		}
	}
	if len(payload) == 0 {
		payload = []byte("null")
	}
	answer := func() {
		if d.publish(nc, d.prefix+"$iothub/methods/res/"+strconv.Itoa(status)+"/?$rid="+rid, 0, payload) != nil {
			return
		}
		d.f.stats.methods.Add(1)
		if status == 500 {
			d.f.stats.methodsFailed.Add(1)
		}
	}
	if cfg.MethodLatency > 0 {
		time.AfterFunc(cfg.MethodLatency, answer)
		return
	}
	answer()
}

// applyDesired applies a desired patch (§8.7) and, with ReportDesired,
// reports its properties back on $iothub/twin/PATCH/properties/reported/.
func (d *Device) applyDesired(nc net.Conn, body []byte) {
	var patch map[string]json.RawMessage
	if json.Unmarshal(body, &patch) != nil {
		d.f.stats.errors.Add(1)
		return
	}
	delete(patch, "$version")
	d.f.stats.desired.Add(1)
	if !d.f.cfg.ReportDesired || len(patch) == 0 {
		return
	}
	reported, err := json.Marshal(patch)
	if err != nil {
		return
	}
	rid := strconv.FormatUint(d.rid.Add(1), 10)
	if d.publish(nc, d.prefix+"$iothub/twin/PATCH/properties/reported/?$rid="+rid, 0, reported) == nil {
		d.f.stats.reported.Add(1)
	}
}

func (d *Device) telemetry(nc net.Conn, done chan struct{}) {
	t := time.NewTicker(d.f.cfg.Telemetry)
	defer t.Stop()
	topic := "devices/" + d.id.ID + "/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8"
	for n := 0; ; n++ {
		select {
		case <-done:
			return
		case <-t.C:
			body := `{"seq":` + strconv.Itoa(n) + `,"temperature":` + strconv.Itoa(18+n%10) + `}`
			if err := d.publish(nc, topic, 1, []byte(body)); err != nil {
				return
			}
			d.f.stats.telemetry.Add(1)
		}
	}
}
