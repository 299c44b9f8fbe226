// Package sim owns simulated device fleets: N devices, each a real MQTT
// connection over loopback (plain TCP or TLS) speaking the Azure IoT Hub
// dialect, that answer direct methods, apply desired properties and
// optionally send telemetry. `herd sim`, `herd demo` and the benchmarks
// use it.
//
// A simulated device is deliberately lean — one connection, one reader
// goroutine, the paho packet codec — so that one process can drive ten
// thousand of them against a hub without becoming the bottleneck. It does
// not use the device SDK (which is tested on its own); it is a load
// generator that follows the same wire rules.
package sim

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"golang.org/x/sync/errgroup"

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
	// Addr is the MQTT address to dial.
	Addr string
	// TLS, if not nil, makes the devices use TLS.
	TLS *tls.Config
	// Devices are the identities to simulate.
	Devices []Identity
	// Concurrency bounds connection attempts in flight (default 256).
	Concurrency int
	// Telemetry, if positive, is each device's interval between messages.
	Telemetry time.Duration
	// ReportDesired makes devices report {"applied": <desired version>}
	// after each desired change.
	ReportDesired bool
	// MethodStatus is the status devices answer methods with (default
	// 200); the answer's payload echoes the request's.
	MethodStatus int
	// Clean asks for clean sessions (default false: persistent).
	Clean bool
	// TokenValidity is the lifetime of the devices' SAS tokens (default 1h).
	TokenValidity time.Duration
	Log           *slog.Logger
	Now           func() time.Time
}

// Stats counts what a fleet did.
type Stats struct {
	Connected       int64
	ConnectFailures int64
	MethodsAnswered int64
	DesiredApplied  int64
	TelemetrySent   int64
	Disconnects     int64
}

// Fleet is a set of simulated devices.
type Fleet struct {
	cfg     Config
	devices []*Device
	stats   struct {
		connected, failures, methods, desired, telemetry, disconnects atomic.Int64
	}
}

// New returns a fleet; nothing connects until Connect.
func New(cfg Config) *Fleet {
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
	f := &Fleet{cfg: cfg}
	for _, id := range cfg.Devices {
		f.devices = append(f.devices, &Device{f: f, id: id})
	}
	return f
}

// Devices returns the fleet's devices.
func (f *Fleet) Devices() []*Device { return f.devices }

// Stats returns the fleet's counters.
func (f *Fleet) Stats() Stats {
	return Stats{
		Connected: f.stats.connected.Load(), ConnectFailures: f.stats.failures.Load(),
		MethodsAnswered: f.stats.methods.Load(), DesiredApplied: f.stats.desired.Load(),
		TelemetrySent: f.stats.telemetry.Load(), Disconnects: f.stats.disconnects.Load(),
	}
}

// Connect connects every device that is not connected, at most
// Concurrency at a time, and returns when all have connected (or with the
// first error after every attempt has finished).
func (f *Fleet) Connect(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(f.cfg.Concurrency)
	for _, d := range f.devices {
		if d.Connected() {
			continue
		}
		g.Go(func() error {
			if err := d.Connect(ctx); err != nil {
				f.stats.failures.Add(1)
				return fmt.Errorf("connect %s: %w", d.id.ID, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Disconnect disconnects every device (gracefully, with DISCONNECT).
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
	f  *Fleet
	id Identity

	mu      sync.Mutex // guards conn and writes
	conn    net.Conn
	done    chan struct{}
	desired atomic.Int64
	rid     atomic.Uint64
}

// ID is the device id.
func (d *Device) ID() string { return d.id.ID }

// DesiredVersion is the last desired $version the device applied.
func (d *Device) DesiredVersion() int64 { return d.desired.Load() }

// Connected reports whether the device holds a connection.
func (d *Device) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conn != nil
}

// Connect opens the device's connection and subscribes to methods,
// desired changes and twin responses (unless the hub kept the session).
func (d *Device) Connect(ctx context.Context) error {
	cfg := d.f.cfg
	var dialer net.Dialer
	nc, err := dialer.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return err
	}
	if cfg.TLS != nil {
		tc := tls.Client(nc, cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return err
		}
		nc = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	} else {
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	r := bufio.NewReaderSize(nc, 2048)
	tok, err := sas.DeviceToken(cfg.Host, d.id.ID, "", d.id.Key, cfg.Now().Add(cfg.TokenValidity))
	if err != nil {
		nc.Close()
		return err
	}
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.ClientIdentifier = d.id.ID
	cp.CleanSession = cfg.Clean
	cp.Keepalive = 0
	cp.UsernameFlag, cp.Username = true, cfg.Host+"/"+d.id.ID+"/?api-version="+herd.APIVersion+"&DeviceClientType=herd-sim"
	cp.PasswordFlag, cp.Password = true, []byte(tok)
	if err := cp.Write(nc); err != nil {
		nc.Close()
		return err
	}
	p, err := packets.ReadPacket(r)
	if err != nil {
		nc.Close()
		return fmt.Errorf("read CONNACK: %w", err)
	}
	ack, ok := p.(*packets.ConnackPacket)
	if !ok || ack.ReturnCode != 0 {
		nc.Close()
		return fmt.Errorf("refused: %v", p)
	}
	if !ack.SessionPresent {
		sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
		sp.MessageID = 1
		sp.Topics = []string{"$iothub/methods/POST/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/twin/res/#"}
		sp.Qoss = []byte{0, 0, 0}
		if err := sp.Write(nc); err != nil {
			nc.Close()
			return err
		}
		if p, err := packets.ReadPacket(r); err != nil {
			nc.Close()
			return fmt.Errorf("read SUBACK: %w", err)
		} else if _, ok := p.(*packets.SubackPacket); !ok {
			nc.Close()
			return fmt.Errorf("expected SUBACK, got %v", p)
		}
	}
	_ = nc.SetDeadline(time.Time{})
	done := make(chan struct{})
	d.mu.Lock()
	d.conn, d.done = nc, done
	d.mu.Unlock()
	d.f.stats.connected.Add(1)
	go d.read(nc, r, done)
	if cfg.Telemetry > 0 {
		go d.telemetry(nc, done)
	}
	return nil
}

// Disconnect sends DISCONNECT and closes the connection.
func (d *Device) Disconnect() {
	d.mu.Lock()
	nc := d.conn
	d.mu.Unlock()
	if nc == nil {
		return
	}
	d.write(nc, packets.NewControlPacket(packets.Disconnect))
	nc.Close()
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	if done != nil {
		<-done
	}
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
	return d.write(nc, pp)
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
		switch {
		case strings.HasPrefix(pp.TopicName, "$iothub/methods/POST/"):
			_, rid, _ := strings.Cut(pp.TopicName, "?$rid=")
			if i := strings.IndexByte(rid, '&'); i >= 0 {
				rid = rid[:i]
			}
			if err := d.publish(nc, "$iothub/methods/res/"+strconv.Itoa(d.f.cfg.MethodStatus)+"/?$rid="+rid, 0, pp.Payload); err != nil {
				return
			}
			d.f.stats.methods.Add(1)
		case strings.HasPrefix(pp.TopicName, "$iothub/twin/PATCH/properties/desired/"):
			d.applyDesired(nc, pp.Payload)
		}
	}
}

func (d *Device) applyDesired(nc net.Conn, body []byte) {
	var patch struct {
		Version int64 `json:"$version"`
	}
	if json.Unmarshal(body, &patch) != nil {
		return
	}
	for {
		cur := d.desired.Load()
		if patch.Version <= cur || d.desired.CompareAndSwap(cur, patch.Version) {
			break
		}
	}
	d.f.stats.desired.Add(1)
	if d.f.cfg.ReportDesired {
		rid := strconv.FormatUint(d.rid.Add(1), 10)
		_ = d.publish(nc, "$iothub/twin/PATCH/properties/reported/?$rid="+rid, 0,
			[]byte(`{"applied":`+strconv.FormatInt(patch.Version, 10)+`}`))
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
