// Package device is Herd's Go device SDK: what a device program uses to
// connect to a Herd hub (or to Azure IoT Hub, whose MQTT dialect Herd
// speaks), answer direct methods, read and report twin properties, follow
// desired-property changes and send telemetry.
//
// A Client connects over MQTT with TLS (default), secure WebSocket, or
// plain TCP for load tests. It signs its own SAS tokens from the
// connection string's key, renews them before they expire by reconnecting
// (or, for a connection string with x509=true, authenticates with the
// client certificate of WithClientCertificate),
// and reconnects with exponential back-off and jitter when the connection
// drops; OnConnectionState tells the program as it happens. It is built on
// github.com/eclipse/paho.mqtt.golang; it never imports Herd's server
// packages.
//
//	c, err := device.New(connectionString, device.WithCAFile("herd-data/ca.pem"))
//	c.OnMethod("reboot", func(ctx context.Context, payload json.RawMessage) (int, any) {
//		return 200, map[string]any{"rebooting": true}
//	})
//	c.OnConnectionState(func(s device.ConnectionState, err error) {
//		log.Print("hub connection: ", s, " ", err)
//	})
//	err = c.Connect(ctx)
//	defer c.Close()
//
// Requests the hub refuses fail with *herd.Error, as in the service SDK:
// herd.IsCode(err, herd.ErrArgumentInvalid) works on both sides, and
// Status holds the status of the hub's answer. Close waits for running
// handlers to return, after cancelling the contexts of method handlers.
package device

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sas"
)

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("device: client closed")

var errConnected = errors.New("device: Connect was already called")

// MethodHandler answers a direct method: the status and a response that is
// sent as JSON (a json.RawMessage or []byte is sent as it is). ctx ends
// after the client's operation timeout, or when the client is closed.
type MethodHandler func(ctx context.Context, payload json.RawMessage) (status int, response any)

// DesiredHandler receives a desired-properties change: the changed keys
// (null = deleted) and the new desired $version. Close waits for a
// running one to return.
type DesiredHandler func(patch map[string]any, version int64)

// subscriptions the client may need.
const (
	subMethods = 1 << iota
	subTwin
	subDesired
)

var subTopics = map[int]string{
	subMethods: "$iothub/methods/POST/#",
	subTwin:    "$iothub/twin/res/#",
	subDesired: "$iothub/twin/PATCH/properties/desired/#",
}

// Client is a device's connection to a hub. Its methods are safe for
// concurrent use.
type Client struct {
	cs   sas.ConnectionString
	opts options
	host string // HostName without port: token and user name

	mu         sync.Mutex
	conn       mqtt.Client   // current connection, nil while disconnected
	ready      chan struct{} // closed when conn is set; replaced when it goes
	subscribed int           // what the hub's session holds
	methods    map[string]MethodHandler
	desired    []DesiredHandler
	onState    []ConnectionStateHandler
	reports    []stateReport // waiting for deliverStates
	pending    map[string]chan twinReply
	rid        uint64
	expires    time.Time
	connecting bool // Connect was called and has not failed
	up         bool // Connect succeeded: the goroutines below run
	closed     bool

	// life is the client's lifecycle context, cancelled by Close; the
	// contexts of method handlers and reconnects derive from it.
	life     context.Context
	stop     context.CancelFunc
	lost     chan lostConn
	reported chan struct{} // a report was queued, or Close was called
	desiredQ chan desiredPush
	g        *group // every goroutine the client starts
}

// lostConn is a connection paho lost, and why.
type lostConn struct {
	conn mqtt.Client
	err  error
}

type twinReply struct {
	status  int
	version int64
	body    []byte
}

type desiredPush struct {
	patch   map[string]any
	version int64
}

// New returns a client for the device named by a device connection string
// (HostName=…;DeviceId=…;SharedAccessKey=… or SharedAccessSignature=… or
// x509=true with WithClientCertificate, optionally GatewayHostName=…), or
// for one of its modules with ModuleId=… (a module's connection string:
// the module's key, its own twin and methods, telemetry from the module).
// It does not connect; call Connect.
func New(connectionString string, opts ...Option) (*Client, error) {
	cs, err := sas.ParseConnectionString(connectionString)
	if err != nil {
		return nil, err
	}
	if err := cs.ForDevice(); err != nil {
		return nil, err
	}
	o := defaults()
	for _, fn := range opts {
		if err := fn(&o); err != nil {
			return nil, err
		}
	}
	if o.transport == Plain && o.address == "" {
		return nil, errors.New("device: the Plain transport needs WithAddress")
	}
	if cs.X509 && cs.SharedAccessKey == "" && cs.SharedAccessSignature == "" {
		switch {
		case o.clientCert == nil:
			return nil, errors.New("device: a connection string with x509=true needs WithClientCertificate")
		case o.transport == Plain:
			return nil, errors.New("device: X.509 authentication needs the TLS or WebSocket transport")
		}
	}
	host, _, _ := strings.Cut(cs.HostName, ":")
	life, stop := context.WithCancel(context.Background())
	return &Client{
		cs: cs, opts: o, host: host,
		ready:    make(chan struct{}),
		methods:  map[string]MethodHandler{},
		pending:  map[string]chan twinReply{},
		life:     life,
		stop:     stop,
		lost:     make(chan lostConn, 8),
		reported: make(chan struct{}, 1),
		desiredQ: make(chan desiredPush, 64),
		g:        newGroup(),
	}, nil
}

// DeviceID is the device's id.
func (c *Client) DeviceID() string { return c.cs.DeviceID }

// ModuleID is the module the client connects as ("" for the device
// itself: a connection string with ModuleId=… makes a module client).
func (c *Client) ModuleID() string { return c.cs.ModuleID }

// identity is what the client connects as: the device id, or
// {deviceId}/{moduleId} for a module (its MQTT client id).
func (c *Client) identity() string {
	if c.cs.ModuleID != "" {
		return c.cs.DeviceID + "/" + c.cs.ModuleID
	}
	return c.cs.DeviceID
}

// Connect opens the first connection and starts keeping it up (token
// renewal, reconnects). Failures are returned without retrying; a refused
// CONNECT is a *herd.Error (ErrUnauthorized for bad credentials). After a
// failure Connect may be called again; after a success it may not.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.connecting:
		c.mu.Unlock()
		return errConnected
	}
	c.connecting = true
	c.mu.Unlock()
	if err := c.dial(ctx); err != nil {
		c.mu.Lock()
		c.connecting = false
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	up := !c.closed
	c.up = up
	c.mu.Unlock()
	if !up || !c.g.Go(c.supervise) || !c.g.Go(c.deliverDesired) || !c.g.Go(c.deliverStates) {
		return ErrClosed // Close came first; it stops whatever started
	}
	return nil
}

// Close disconnects, stops reconnecting and waits for the client's
// goroutines to return, running handlers included; it cancels the
// contexts of method handlers first so that they can stop. State handlers
// are told Disconnected with ErrClosed.
//
// A handler may call Close: it then waits for the other handlers but not
// for itself (nor for another handler that is calling Close), so it does
// not deadlock; the client's goroutine that ran the handler ends when the
// handler returns. Close may be called more than once, and every call
// waits; calls made after it fail with ErrClosed. It returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	first := !c.closed
	var conn mqtt.Client
	if first {
		if c.up {
			c.queueState(Disconnected, ErrClosed)
		}
		c.closed = true
		conn, c.conn = c.conn, nil
		c.stop()
	}
	c.mu.Unlock()
	if first {
		select {
		case c.reported <- struct{}{}: // deliverStates: the last report
		default:
		}
		c.g.stop()
		if conn != nil {
			conn.Disconnect(250)
		}
	}
	c.g.wait()
	return nil
}

// usesCertificate reports whether the client authenticates with its client
// certificate rather than a SAS token (x509=true and no key or token).
func (c *Client) usesCertificate() bool {
	return c.cs.X509 && c.cs.SharedAccessKey == "" && c.cs.SharedAccessSignature == ""
}

// token returns the password for the next CONNECT and its expiry: none
// for a device that authenticates with its certificate (§1.4, §8.2).
func (c *Client) token() (string, time.Time, error) {
	if c.usesCertificate() {
		return "", time.Time{}, nil
	}
	if c.cs.SharedAccessSignature != "" {
		t, err := sas.Parse(c.cs.SharedAccessSignature)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("device: SharedAccessSignature: %w", err)
		}
		exp, _ := t.ExpiresAt()
		return c.cs.SharedAccessSignature, exp, nil
	}
	exp := c.opts.now().Add(c.opts.tokenValidity)
	var tok string
	var err error
	if c.cs.ModuleID != "" {
		tok, err = sas.ModuleToken(c.host, c.cs.DeviceID, c.cs.ModuleID, c.cs.SharedAccessKeyName, c.cs.SharedAccessKey, exp)
	} else {
		tok, err = sas.DeviceToken(c.host, c.cs.DeviceID, c.cs.SharedAccessKeyName, c.cs.SharedAccessKey, exp)
	}
	return tok, time.Unix(exp.Unix(), 0), err
}

// broker is the URL paho dials.
func (c *Client) broker() string {
	addr := c.opts.address
	if addr == "" {
		addr = c.cs.GatewayHostName
		if addr == "" {
			addr = c.cs.HostName
		}
	}
	switch c.opts.transport {
	case WebSocket:
		if strings.Contains(addr, "://") {
			return strings.TrimSuffix(addr, "/") + "/$iothub/websocket"
		}
		return "wss://" + addr + "/$iothub/websocket"
	case Plain:
		return "tcp://" + addr
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "8883")
	}
	return "ssl://" + addr
}

func (c *Client) username() string {
	return c.host + "/" + c.identity() + "/?api-version=" + herd.APIVersion +
		"&DeviceClientType=" + url.QueryEscape("herd-device-go/1")
}

// dial makes one connection attempt and, on success, installs it and
// subscribes what the handlers need.
func (c *Client) dial(ctx context.Context) error {
	password, exp, err := c.token()
	if err != nil {
		return err
	}
	o := mqtt.NewClientOptions().
		AddBroker(c.broker()).
		SetClientID(c.identity()).
		SetUsername(c.username()).
		SetPassword(password).
		SetProtocolVersion(4).
		SetCleanSession(c.opts.cleanSession).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(c.opts.keepAlive).
		SetConnectTimeout(c.opts.opTimeout).
		SetOrderMatters(true).
		SetDefaultPublishHandler(c.route)
	if c.opts.transport != Plain {
		tc := &tls.Config{RootCAs: c.opts.roots, ServerName: c.host, MinVersion: tls.VersionTLS12}
		if c.opts.clientCert != nil {
			tc.Certificates = []tls.Certificate{*c.opts.clientCert}
		}
		o.SetTLSConfig(tc)
	}
	var conn mqtt.Client
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		c.opts.log.Info("connection lost", "device_id", c.cs.DeviceID, "err", err)
		select {
		case c.lost <- lostConn{conn, err}:
		default:
		}
	})
	conn = mqtt.NewClient(o)
	tok := conn.Connect()
	if err := wait(ctx, tok); err != nil {
		conn.Disconnect(0)
		return connectError(c.identity(), err)
	}
	present := tok.(*mqtt.ConnectToken).SessionPresent()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Disconnect(0)
		return ErrClosed
	}
	if !present {
		c.subscribed = 0
	}
	c.conn = conn
	c.expires = exp
	close(c.ready)
	c.mu.Unlock()
	if err := c.ensureSubscribed(ctx); err != nil {
		c.mu.Lock()
		c.forget(conn) // never reported Connected
		c.mu.Unlock()
		conn.Disconnect(0)
		return err
	}
	c.mu.Lock()
	if c.conn == conn {
		c.setState(Connected, nil)
	}
	c.mu.Unlock()
	return nil
}

// need is what the handlers need subscribed.
func (c *Client) need() int {
	n := subTwin
	if len(c.methods) > 0 {
		n |= subMethods
	}
	if len(c.desired) > 0 {
		n |= subDesired
	}
	return n
}

// ensureSubscribed subscribes whatever is needed and not yet in the hub's
// session.
func (c *Client) ensureSubscribed(ctx context.Context) error {
	c.mu.Lock()
	conn, missing := c.conn, c.need()&^c.subscribed
	c.mu.Unlock()
	if conn == nil || missing == 0 {
		return nil
	}
	filters := map[string]byte{}
	for bit, topic := range subTopics {
		if missing&bit != 0 {
			filters[topic] = 0
		}
	}
	if err := wait(ctx, conn.SubscribeMultiple(filters, nil)); err != nil {
		return fmt.Errorf("device: subscribe: %w", err)
	}
	c.mu.Lock()
	if c.conn == conn {
		c.subscribed |= missing
	}
	c.mu.Unlock()
	return nil
}

// wait waits for a paho token within ctx.
func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// supervise keeps the connection up: it renews the token before expiry by
// reconnecting, and reconnects with back-off after a drop.
func (c *Client) supervise() {
	for {
		c.mu.Lock()
		renewIn := c.expires.Sub(c.opts.now()) - c.opts.renewMargin
		if c.cs.SharedAccessSignature != "" || c.usesCertificate() {
			renewIn = time.Duration(1<<63 - 1) // a fixed token or a certificate is never renewed
		}
		current := c.conn
		c.mu.Unlock()
		renew := time.NewTimer(max(renewIn, 0))
		select {
		case <-c.life.Done():
			renew.Stop()
			return
		case lost := <-c.lost:
			renew.Stop()
			if lost.conn != current {
				continue // an old connection
			}
			c.drop(current, lost.err)
		case <-renew.C:
			c.opts.log.Info("renewing SAS token", "device_id", c.cs.DeviceID)
			c.drop(current, ErrTokenRenewal)
			if current != nil {
				current.Disconnect(250)
			}
		}
		if !c.reconnect() {
			return
		}
	}
}

// drop forgets the current connection, which went for the reason cause,
// and reports it.
func (c *Client) drop(conn mqtt.Client, cause error) {
	c.mu.Lock()
	if c.forget(conn) {
		c.setState(Disconnected, cause)
	}
	c.mu.Unlock()
}

// forget forgets conn if it is the current connection, and reports whether
// it was; c.mu is held.
func (c *Client) forget(conn mqtt.Client) bool {
	if c.conn != conn || conn == nil {
		return false
	}
	c.conn = nil
	c.ready = make(chan struct{})
	return true
}

// reconnect dials until it succeeds or the client closes, waiting an
// exponentially growing, jittered time between attempts.
func (c *Client) reconnect() bool {
	c.reportState(Reconnecting, nil)
	delay := c.opts.backoffMin
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(c.life, c.opts.opTimeout)
		err := c.dial(ctx)
		cancel()
		if err == nil {
			c.opts.log.Info("reconnected", "device_id", c.cs.DeviceID, "attempts", attempt+1)
			return true
		}
		if errors.Is(err, ErrClosed) || c.life.Err() != nil {
			return false
		}
		c.opts.log.Warn("reconnect failed", "device_id", c.cs.DeviceID, "err", err)
		c.reportState(Reconnecting, err)
		sleep := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-c.life.Done():
			sleep.Stop()
			return false
		case <-sleep.C:
		}
		delay = min(2*delay, c.opts.backoffMax)
	}
}

// reportState is setState for a caller that does not hold c.mu.
func (c *Client) reportState(s ConnectionState, err error) {
	c.mu.Lock()
	c.setState(s, err)
	c.mu.Unlock()
}

// current waits for a connection within ctx.
func (c *Client) current(ctx context.Context) (mqtt.Client, error) {
	for {
		c.mu.Lock()
		conn, ready, closed := c.conn, c.ready, c.closed
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if conn != nil {
			return conn, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("device: not connected: %w", ctx.Err())
		case <-c.life.Done():
			return nil, ErrClosed
		}
	}
}

// opContext gives an operation the default timeout unless ctx has one.
func (c *Client) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.opTimeout)
}

// publish sends one message on the current connection.
func (c *Client) publish(ctx context.Context, topic string, qos byte, body []byte) error {
	conn, err := c.current(ctx)
	if err != nil {
		return err
	}
	return wait(ctx, conn.Publish(topic, qos, false, body))
}

// route dispatches every message the hub sends.
func (c *Client) route(_ mqtt.Client, m mqtt.Message) {
	topic := m.Topic()
	switch {
	case strings.HasPrefix(topic, "$iothub/methods/POST/"):
		c.method(topic, m.Payload())
	case strings.HasPrefix(topic, "$iothub/twin/res/"):
		c.twinResponse(topic, m.Payload())
	case strings.HasPrefix(topic, "$iothub/twin/PATCH/properties/desired/"):
		c.desiredPatch(m.Payload())
	default:
		c.opts.log.Debug("message on an unexpected topic", "device_id", c.cs.DeviceID, "topic", topic)
	}
}

// query returns the parameters after "?" in a topic.
func query(topic string) url.Values {
	_, q, _ := strings.Cut(topic, "?")
	v, _ := url.ParseQuery(q)
	return v
}

// OnMethod registers the handler of a direct method (replacing any
// previous one) and subscribes to methods if connected. Methods without a
// handler get no answer: the caller sees 504 GatewayTimeout, as with Azure.
func (c *Client) OnMethod(name string, h MethodHandler) {
	c.mu.Lock()
	c.methods[name] = h
	c.mu.Unlock()
	c.subscribeLater()
}

// OnDesiredChange registers a handler for desired-property changes.
// Handlers run one change at a time, in order.
func (c *Client) OnDesiredChange(h DesiredHandler) {
	c.mu.Lock()
	c.desired = append(c.desired, h)
	c.mu.Unlock()
	c.subscribeLater()
}

func (c *Client) subscribeLater() {
	c.mu.Lock()
	connected := c.conn != nil
	c.mu.Unlock()
	if !connected {
		return // dial subscribes
	}
	c.g.Go(func() {
		ctx, cancel := context.WithTimeout(c.life, c.opts.opTimeout)
		defer cancel()
		if err := c.ensureSubscribed(ctx); err != nil && c.life.Err() == nil {
			c.opts.log.Warn("subscribe", "device_id", c.cs.DeviceID, "err", err)
		}
	})
}

func (c *Client) method(topic string, payload []byte) {
	rest := strings.TrimPrefix(topic, "$iothub/methods/POST/")
	name, _, _ := strings.Cut(rest, "/")
	name, _, _ = strings.Cut(name, "?")
	rid := query(topic).Get("$rid")
	c.mu.Lock()
	h := c.methods[name]
	c.mu.Unlock()
	if h == nil || rid == "" {
		return
	}
	body := append([]byte(nil), payload...)
	c.g.Go(func() { c.answer(h, rid, body) }) // nothing starts after Close
}

// answer runs a method handler and sends its answer.
func (c *Client) answer(h MethodHandler, rid string, body []byte) {
	ctx, cancel := context.WithTimeout(c.life, c.opts.opTimeout)
	defer cancel()
	status, resp := h(ctx, json.RawMessage(body))
	var out []byte
	switch r := resp.(type) {
	case json.RawMessage:
		out = r
	case []byte:
		out = r
	default:
		var err error
		if out, err = json.Marshal(resp); err != nil {
			status, out = 500, []byte(strconv.Quote("device: cannot encode the method response: "+err.Error()))
		}
	}
	if len(out) == 0 {
		out = []byte("null")
	}
	topic := "$iothub/methods/res/" + strconv.Itoa(status) + "/?$rid=" + rid
	if err := c.publish(ctx, topic, 0, out); err != nil && c.life.Err() == nil {
		c.opts.log.Warn("method response not sent", "device_id", c.cs.DeviceID, "err", err)
	}
}

func (c *Client) desiredPatch(payload []byte) {
	var patch map[string]any
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	if err := dec.Decode(&patch); err != nil {
		c.opts.log.Warn("desired notification is not JSON", "device_id", c.cs.DeviceID, "err", err)
		return
	}
	v, _ := versionOf(patch["$version"])
	delete(patch, "$version")
	select {
	case c.desiredQ <- desiredPush{patch, v}:
	case <-c.life.Done():
	}
}

// deliverDesired runs the desired handlers, one change at a time, until
// the client is closed.
func (c *Client) deliverDesired() {
	for {
		select {
		case <-c.life.Done():
			return
		case p := <-c.desiredQ:
			if c.life.Err() != nil {
				return
			}
			c.mu.Lock()
			hs := append([]DesiredHandler(nil), c.desired...)
			c.mu.Unlock()
			for _, h := range hs {
				h(p.patch, p.version)
			}
		}
	}
}

func versionOf(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		return int64(n), true
	}
	return 0, false
}
