// Package device is Herd's Go device SDK: what a device program uses to
// connect to a Herd hub (or to Azure IoT Hub, whose MQTT dialect Herd
// speaks), answer direct methods, read and report twin properties, follow
// desired-property changes and send telemetry.
//
// A Client connects over MQTT with TLS (default), secure WebSocket, or
// plain TCP for load tests. It signs its own SAS tokens from the
// connection string's key, renews them before they expire by reconnecting,
// and reconnects with exponential back-off and jitter when the connection
// drops. It is built on github.com/eclipse/paho.mqtt.golang; it never
// imports Herd's server packages.
//
//	c, err := device.New(connectionString, device.WithCAFile("herd-data/ca.pem"))
//	c.OnMethod("reboot", func(ctx context.Context, payload json.RawMessage) (int, any) {
//		return 200, map[string]any{"rebooting": true}
//	})
//	err = c.Connect(ctx)
//	defer c.Close()
//
// Requests the hub refuses fail with *herd.Error, as in the service SDK:
// herd.IsCode(err, herd.ErrArgumentInvalid) works on both sides, and
// Status holds the status of the hub's answer.
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

// MethodHandler answers a direct method: the status and a response that is
// sent as JSON (a json.RawMessage or []byte is sent as it is).
type MethodHandler func(ctx context.Context, payload json.RawMessage) (status int, response any)

// DesiredHandler receives a desired-properties change: the changed keys
// (null = deleted) and the new desired $version.
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
	pending    map[string]chan twinReply
	rid        uint64
	expires    time.Time
	closed     bool

	lost     chan mqtt.Client
	done     chan struct{}
	desiredQ chan desiredPush
	wg       sync.WaitGroup
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
// (HostName=…;DeviceId=…;SharedAccessKey=… or SharedAccessSignature=…,
// optionally GatewayHostName=…). It does not connect; call Connect.
func New(connectionString string, opts ...Option) (*Client, error) {
	cs, err := sas.ParseConnectionString(connectionString)
	if err != nil {
		return nil, err
	}
	if err := cs.ForDevice(); err != nil {
		return nil, err
	}
	if cs.ModuleID != "" {
		return nil, errors.New("device: module identities are not supported")
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
	host, _, _ := strings.Cut(cs.HostName, ":")
	return &Client{
		cs: cs, opts: o, host: host,
		ready:    make(chan struct{}),
		methods:  map[string]MethodHandler{},
		pending:  map[string]chan twinReply{},
		lost:     make(chan mqtt.Client, 8),
		done:     make(chan struct{}),
		desiredQ: make(chan desiredPush, 64),
	}, nil
}

// DeviceID is the device's id.
func (c *Client) DeviceID() string { return c.cs.DeviceID }

// Connect opens the first connection and starts keeping it up (token
// renewal, reconnects). Failures are returned without retrying; a refused
// CONNECT is a *herd.Error (ErrUnauthorized for bad credentials).
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.mu.Unlock()
	if err := c.dial(ctx); err != nil {
		return err
	}
	c.wg.Add(2)
	go c.supervise()
	go c.deliverDesired()
	return nil
}

// Close disconnects and stops reconnecting.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conn := c.conn
	c.conn = nil
	close(c.done)
	c.mu.Unlock()
	if conn != nil {
		conn.Disconnect(250)
	}
	c.wg.Wait()
	return nil
}

// token returns the password for the next CONNECT and its expiry.
func (c *Client) token() (string, time.Time, error) {
	if c.cs.SharedAccessSignature != "" {
		t, err := sas.Parse(c.cs.SharedAccessSignature)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("device: SharedAccessSignature: %w", err)
		}
		exp, _ := t.ExpiresAt()
		return c.cs.SharedAccessSignature, exp, nil
	}
	exp := c.opts.now().Add(c.opts.tokenValidity)
	tok, err := sas.DeviceToken(c.host, c.cs.DeviceID, c.cs.SharedAccessKeyName, c.cs.SharedAccessKey, exp)
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
	return c.host + "/" + c.cs.DeviceID + "/?api-version=" + herd.APIVersion +
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
		SetClientID(c.cs.DeviceID).
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
		o.SetTLSConfig(&tls.Config{RootCAs: c.opts.roots, ServerName: c.host, MinVersion: tls.VersionTLS12})
	}
	var conn mqtt.Client
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		c.opts.log.Info("connection lost", "device_id", c.cs.DeviceID, "err", err)
		select {
		case c.lost <- conn:
		default:
		}
	})
	conn = mqtt.NewClient(o)
	tok := conn.Connect()
	if err := wait(ctx, tok); err != nil {
		conn.Disconnect(0)
		return connectError(c.cs.DeviceID, err)
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
	return c.ensureSubscribed(ctx)
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
	defer c.wg.Done()
	for {
		c.mu.Lock()
		renewIn := c.expires.Sub(c.opts.now()) - c.opts.renewMargin
		if c.cs.SharedAccessSignature != "" {
			renewIn = time.Duration(1<<63 - 1) // a fixed token is never renewed
		}
		current := c.conn
		c.mu.Unlock()
		renew := time.NewTimer(max(renewIn, 0))
		select {
		case <-c.done:
			renew.Stop()
			return
		case lost := <-c.lost:
			renew.Stop()
			if lost != current {
				continue // an old connection
			}
			c.drop(current)
		case <-renew.C:
			c.opts.log.Info("renewing SAS token", "device_id", c.cs.DeviceID)
			c.drop(current)
			if current != nil {
				current.Disconnect(250)
			}
		}
		if !c.reconnect() {
			return
		}
	}
}

// drop forgets the current connection.
func (c *Client) drop(conn mqtt.Client) {
	c.mu.Lock()
	if c.conn == conn && c.conn != nil {
		c.conn = nil
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
}

// reconnect dials until it succeeds or the client closes, waiting an
// exponentially growing, jittered time between attempts.
func (c *Client) reconnect() bool {
	delay := c.opts.backoffMin
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.opTimeout)
		go func() {
			select {
			case <-c.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := c.dial(ctx)
		cancel()
		if err == nil {
			c.opts.log.Info("reconnected", "device_id", c.cs.DeviceID, "attempts", attempt+1)
			return true
		}
		if errors.Is(err, ErrClosed) {
			return false
		}
		c.opts.log.Warn("reconnect failed", "device_id", c.cs.DeviceID, "err", err)
		sleep := delay/2 + rand.N(delay/2+1)
		select {
		case <-c.done:
			return false
		case <-time.After(sleep):
		}
		delay = min(2*delay, c.opts.backoffMax)
	}
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
		case <-c.done:
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
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.opTimeout)
		defer cancel()
		if err := c.ensureSubscribed(ctx); err != nil {
			c.opts.log.Warn("subscribe", "device_id", c.cs.DeviceID, "err", err)
		}
	}()
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
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.opTimeout)
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
		if err := c.publish(ctx, topic, 0, out); err != nil {
			c.opts.log.Warn("method response not sent", "device_id", c.cs.DeviceID, "err", err)
		}
	}()
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
	case <-c.done:
	}
}

func (c *Client) deliverDesired() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case p := <-c.desiredQ:
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
