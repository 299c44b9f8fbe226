// Package method owns direct methods (§5 of the compatibility reference):
// validating a call, waiting for the device to be online for methods,
// sending the request through the bus, correlating the device's answer by
// request id, and timing out.
//
// Invoke is built to be called concurrently for tens of thousands of
// devices (by the REST API and by method jobs): a call costs one small
// allocation set, a timer and a map entry in a sharded table; waiting for
// an offline device is a notification from the bus, not polling.
package method

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/clock"
)

// Limits of §5.2.
const (
	MaxPayload             = 128 * 1024
	DefaultResponseTimeout = 30
	MinResponseTimeout     = 5
	MaxResponseTimeout     = 300
	MaxConnectTimeout      = 300
)

// Messages Azure uses for the two direct-method failures (§5.3).
const (
	msgNotOnline = "Timed out waiting for device to connect."
	msgTimeout   = "Timed out waiting for the response from device."
)

// NotOnlineError is the DeviceNotOnline (404103) failure: the device was
// not connected and subscribed to methods within the connect timeout.
type NotOnlineError struct {
	Err herd.Error
	// Wait is the connect timeout that passed.
	Wait time.Duration
}

// Error implements error.
func (e *NotOnlineError) Error() string { return e.Err.Error() }

// Unwrap exposes the *herd.Error with the code.
func (e *NotOnlineError) Unwrap() error { return &e.Err }

// Timeout is the connect timeout, shown in Azure's error "info".
func (e *NotOnlineError) Timeout() time.Duration { return e.Wait }

func notOnline(wait time.Duration) error {
	return &NotOnlineError{Err: herd.Error{Code: herd.ErrDeviceNotOnline, Message: msgNotOnline}, Wait: wait}
}

// ExistsFunc reports whether a device is registered: nil, or an error with
// code DeviceNotFound (or another failure).
type ExistsFunc func(ctx context.Context, deviceID string) error

// Remote reaches the devices connected to the other nodes of a cluster.
type Remote interface {
	// Owner returns the other node a device is connected to, or "" when
	// none is known.
	Owner(ctx context.Context, deviceID string) (string, error)
	// Invoke calls a method on a device connected to node, which does not
	// wait for the device (connectTimeoutInSeconds is not passed on). It
	// fails with DeviceNotOnline when the device is not online there (the
	// request was not sent), and with GatewayTimeout when node does not
	// answer in time: the request may have reached the device.
	Invoke(ctx context.Context, node, deviceID string, req herd.MethodRequest) (*herd.MethodResult, error)
}

// Service invokes direct methods.
type Service struct {
	bus    *bus.Bus
	exists ExistsFunc
	clock  clock.Clock
	remote Remote // nil: one node

	// onlineMu guards online: the waiters for a device to come online on
	// another node, woken by Online.
	onlineMu sync.Mutex
	online   map[string]*onlineWait

	// latency is the time from sending a request to the device's answer;
	// calls counts invocations by outcome.
	latency prometheus.Histogram
	calls   *prometheus.CounterVec
	results map[string]prometheus.Counter // calls' children, looked up once

	next   atomic.Uint64
	shards [64]callShard
}

type callShard struct {
	mu    sync.Mutex
	calls map[uint64]*call
}

// call is one invocation waiting for its answer.
type call struct {
	deviceID string
	done     chan *herd.MethodResult // buffered 1
}

// NewService returns a method service that reaches devices through b.
// exists checks that a device is registered before waiting for it. Its
// metrics are registered with reg unless reg is nil.
func NewService(b *bus.Bus, exists ExistsFunc, c clock.Clock, reg prometheus.Registerer) *Service {
	s := &Service{bus: b, exists: exists, clock: c,
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_method_latency_seconds",
			Help:    "Direct methods (REST and jobs): time from sending the request to the device's answer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_method_calls_total",
			Help: "Direct methods (REST and jobs) by result: answered, gateway_timeout, not_online, not_found, canceled; in a cluster, counted on the node that took the call.",
		}, []string{"result"}),
	}
	for i := range s.shards {
		s.shards[i].calls = map[uint64]*call{}
	}
	s.results = map[string]prometheus.Counter{}
	for _, r := range []string{"answered", "gateway_timeout", "not_online", "not_found", "canceled"} {
		s.results[r] = s.calls.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(s.latency, s.calls)
	}
	return s
}

// UseRemote has the service reach devices connected to other nodes
// through r. Call it before the service is used.
func (s *Service) UseRemote(r Remote) {
	s.remote = r
	s.online = map[string]*onlineWait{}
}

// onlineWait is the calls waiting for one device: ch is closed by Online.
type onlineWait struct {
	ch chan struct{}
	n  int
}

// CameOnline tells the service that a device came online for methods on
// another node: calls waiting for it look for it again.
func (s *Service) CameOnline(deviceID string) {
	if s.remote == nil {
		return
	}
	s.onlineMu.Lock()
	w := s.online[deviceID]
	delete(s.online, deviceID)
	s.onlineMu.Unlock()
	if w != nil {
		close(w.ch)
	}
}

// onlineSignal returns a channel that Online closes for deviceID, and the
// release the caller calls when it stops waiting.
func (s *Service) onlineSignal(deviceID string) (<-chan struct{}, func()) {
	s.onlineMu.Lock()
	defer s.onlineMu.Unlock()
	w := s.online[deviceID]
	if w == nil {
		w = &onlineWait{ch: make(chan struct{})}
		s.online[deviceID] = w
	}
	w.n++
	return w.ch, func() {
		s.onlineMu.Lock()
		defer s.onlineMu.Unlock()
		if w.n--; w.n == 0 && s.online[deviceID] == w {
			delete(s.online, deviceID)
		}
	}
}

// count records the outcome of one invocation.
func (s *Service) count(err error) {
	result := "answered"
	switch {
	case err == nil:
	case herd.IsCode(err, herd.ErrGatewayTimeout):
		result = "gateway_timeout"
	case herd.IsCode(err, herd.ErrDeviceNotOnline):
		result = "not_online"
	case herd.IsCode(err, herd.ErrDeviceNotFound):
		result = "not_found"
	default:
		result = "canceled"
	}
	s.results[result].Inc()
}

// Validate checks a request and fills in defaults: responseTimeoutInSeconds
// 5–300 (0 or absent means 30), connectTimeoutInSeconds 0–300, the method
// name's characters (§5.2), a payload of at most 128 KB that is valid JSON
// (nil means null).
func Validate(req *herd.MethodRequest) error {
	if req.MethodName == "" {
		return herd.Errorf(herd.ErrArgumentNull, "methodName is required")
	}
	if err := validName(req.MethodName); err != nil {
		return err
	}
	if req.ResponseTimeoutInSeconds == 0 {
		req.ResponseTimeoutInSeconds = DefaultResponseTimeout
	}
	if t := req.ResponseTimeoutInSeconds; t < MinResponseTimeout || t > MaxResponseTimeout {
		return herd.Errorf(herd.ErrArgumentInvalid, "responseTimeoutInSeconds must be between %d and %d, not %d",
			MinResponseTimeout, MaxResponseTimeout, t)
	}
	if t := req.ConnectTimeoutInSeconds; t < 0 || t > MaxConnectTimeout {
		return herd.Errorf(herd.ErrArgumentInvalid, "connectTimeoutInSeconds must be between 0 and %d, not %d", MaxConnectTimeout, t)
	}
	if len(req.Payload) == 0 {
		req.Payload = json.RawMessage("null")
	}
	if len(req.Payload) > MaxPayload {
		return herd.Errorf(herd.ErrMessageTooLarge, "the method payload is %d bytes; the limit is %d", len(req.Payload), MaxPayload)
	}
	if !json.Valid(req.Payload) {
		return herd.Errorf(herd.ErrArgumentInvalid, "the method payload is not valid JSON")
	}
	return nil
}

// validName checks a method name: printable US-ASCII except
// $ ( ) < > @ , ; : \ " / [ ] ? = { }, space and tab (§5.2).
func validName(name string) error {
	if len(name) > 1024 {
		return herd.Errorf(herd.ErrArgumentInvalid, "methodName is longer than 1024 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f {
			return herd.Errorf(herd.ErrArgumentInvalid, "methodName %q contains a character that is not printable US-ASCII", name)
		}
		switch c {
		case '$', '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}':
			return herd.Errorf(herd.ErrArgumentInvalid, "methodName %q must not contain %q", name, c)
		}
	}
	return nil
}

// Option changes one invocation.
type Option func(*options)

type options struct {
	sent  func()
	local bool
}

// Here limits a call to a device connected to this node: it is not
// looked for on other nodes (a call that another node routed here).
func Here() Option { return func(o *options) { o.local = true } }

// OnSent calls fn once the request has been written to the device's
// connection. A caller that needs at-most-once delivery (method jobs)
// records the call as in flight there: an invocation that returns an error
// without fn having been called never reached the device.
func OnSent(fn func()) Option { return func(o *options) { o.sent = fn } }

// Invoke calls a direct method on a device and waits for its answer. req
// must have passed Validate. It fails with DeviceNotFound for an unknown
// device, DeviceNotOnline (*NotOnlineError) when the device is not online
// for methods within req.ConnectTimeoutInSeconds, and GatewayTimeout when
// the device does not answer within req.ResponseTimeoutInSeconds of
// receiving the request. If ctx ends first, ctx.Err() is returned.
func (s *Service) Invoke(ctx context.Context, deviceID string, req herd.MethodRequest, opts ...Option) (res *herd.MethodResult, err error) {
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	if !o.local {
		// A call another node routed here is counted there, where it was
		// made; its latency is observed here, where it reaches the device.
		defer func() { s.count(err) }()
	}
	if err := s.exists(ctx, deviceID); err != nil {
		return nil, err
	}
	connectWait := time.Duration(req.ConnectTimeoutInSeconds) * time.Second
	waitCtx, cancelWait := s.withTimeout(ctx, connectWait)
	defer cancelWait()

	id := s.next.Add(1)
	c := &call{deviceID: deviceID, done: make(chan *herd.MethodResult, 1)}
	sh := &s.shards[id%uint64(len(s.shards))]
	sh.mu.Lock()
	sh.calls[id] = c
	sh.mu.Unlock()
	defer func() {
		sh.mu.Lock()
		delete(sh.calls, id)
		sh.mu.Unlock()
	}()
	payload := []byte(req.Payload)
	if len(payload) == 0 {
		payload = []byte("null")
	}
	for {
		var conn bus.Conn
		var err error
		if s.remote != nil && !o.local {
			var res *herd.MethodResult
			var done bool
			conn, res, done, err = s.route(ctx, waitCtx, deviceID, req, o)
			if done {
				return res, err
			}
		} else {
			conn, err = s.bus.WaitMethods(waitCtx, deviceID)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, notOnline(connectWait)
		}
		dropped := make(chan struct{})
		mc := &bus.MethodCall{
			Name: req.MethodName, RID: strconv.FormatUint(id, 16), Payload: payload,
			Sent:    o.sent,
			Dropped: func() { close(dropped) },
		}
		// The response timer starts before the request can reach the
		// device, so that the answer (or a clock moving on) can never
		// come before the timer exists.
		timeout := make(chan struct{})
		sent := s.clock.Now()
		t := s.clock.AfterFunc(time.Duration(req.ResponseTimeoutInSeconds)*time.Second, func() { close(timeout) })
		if !conn.SendMethod(mc) {
			t.Stop()
			// The connection went away between lookup and send: wait for
			// the next one within the connect timeout.
			if err := s.pause(waitCtx); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, notOnline(connectWait)
			}
			continue
		}
		res, retry, err := s.await(ctx, c, dropped, timeout)
		t.Stop()
		if retry {
			continue // never written: safe to send again
		}
		if err == nil {
			s.latency.Observe(s.clock.Now().Sub(sent).Seconds())
		}
		return res, err
	}
}

// route finds a device in a cluster: here (conn), on another node (the
// call is made there: done, with its result), or, within waitCtx, on
// whichever node it comes online first. err is waitCtx's when it ended
// with the device nowhere.
func (s *Service) route(ctx, waitCtx context.Context, deviceID string, req herd.MethodRequest, o options) (conn bus.Conn, res *herd.MethodResult, done bool, err error) {
	for {
		// Online here: the caller sends it.
		if c, err := s.bus.WaitMethods(expired, deviceID); err == nil {
			return c, nil, false, nil
		}
		// The signal is taken before the lookup, so that an Online after
		// the lookup is not missed.
		signal, release := s.onlineSignal(deviceID)
		node, err := s.remote.Owner(ctx, deviceID)
		if err != nil {
			release()
			return nil, nil, true, err
		}
		if node != "" {
			release()
			res, err := s.remote.Invoke(ctx, node, deviceID, req)
			if !herd.IsCode(err, herd.ErrDeviceNotOnline) {
				if o.sent != nil {
					o.sent() // it may have reached the device
				}
				return nil, res, true, err
			}
			// Gone from there meanwhile: look again shortly, within the
			// connect timeout.
			if err := s.sleep(waitCtx, remoteRetry); err != nil {
				return nil, nil, false, err
			}
			continue
		}
		// Nowhere yet: wait for it here or for word from another node.
		c, err := s.waitHereOrSignal(waitCtx, deviceID, signal)
		release()
		if err == nil {
			return c, nil, false, nil
		}
		if waitCtx.Err() != nil {
			return nil, nil, false, waitCtx.Err()
		}
	}
}

// waitHereOrSignal waits until the device is online here (its
// connection), signal is closed or ctx ends (an error).
func (s *Service) waitHereOrSignal(ctx context.Context, deviceID string, signal <-chan struct{}) (bus.Conn, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-signal:
			cancel()
		case <-wctx.Done():
		}
	}()
	return s.bus.WaitMethods(wctx, deviceID)
}

// Reachable reports whether a device is online for methods here or, in a
// cluster, connected to another node.
func (s *Service) Reachable(ctx context.Context, deviceID string) bool {
	if c := s.bus.Lookup(deviceID); c != nil && c.Features().Has(bus.Methods) {
		return true
	}
	if s.remote == nil {
		return false
	}
	node, err := s.remote.Owner(ctx, deviceID)
	return err == nil && node != ""
}

// WaitReachable returns nil once Reachable holds, woken by the bus and by
// CameOnline (never polling), or an error when ctx ends first.
func (s *Service) WaitReachable(ctx context.Context, deviceID string) error {
	if s.remote == nil {
		_, err := s.bus.WaitMethods(ctx, deviceID)
		return err
	}
	for {
		signal, release := s.onlineSignal(deviceID)
		if s.Reachable(ctx, deviceID) {
			release()
			return nil
		}
		_, err := s.waitHereOrSignal(ctx, deviceID, signal)
		release()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// remoteRetry is how long a call waits before looking again for a device
// that the node it was said to be on no longer has.
const remoteRetry = 50 * time.Millisecond

// sleep waits d or until ctx ends.
func (s *Service) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pause yields once before trying again, so that a connection that is
// being replaced can finish; it returns early when ctx ends.
func (s *Service) pause(ctx context.Context) error { return s.sleep(ctx, time.Millisecond) }

// await waits for the answer to a sent request. retry is true when the
// connection dropped the request before writing it.
func (s *Service) await(ctx context.Context, c *call, dropped, timeout <-chan struct{}) (*herd.MethodResult, bool, error) {
	select {
	case res := <-c.done:
		return res, false, nil
	case <-dropped:
		return nil, true, nil
	case <-timeout:
		return nil, false, herd.Errorf(herd.ErrGatewayTimeout, msgTimeout)
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// withTimeout is context.WithTimeout on the service's clock. A zero d gives
// a context that is already done.
func (s *Service) withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return expired, func() {}
	}
	wctx, cancel := context.WithCancelCause(ctx)
	t := s.clock.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	return wctx, func() { t.Stop(); cancel(context.Canceled) }
}

// expired is a context that has already ended: the connect wait of a call
// with connectTimeoutInSeconds 0 (the common case needs no allocation).
var expired = func() context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(context.DeadlineExceeded)
	return ctx
}()

// ErrUnknownRequest is returned by Respond for an answer that matches no
// waiting call (unknown, expired, or another device's request id).
var ErrUnknownRequest = errors.New("no method call is waiting for this request id")

// Respond delivers a device's answer ($iothub/methods/res/{status}/?$rid=)
// to the waiting call. The answer counts only if it comes from the device
// the request was sent to.
func (s *Service) Respond(deviceID, rid string, status int, payload []byte) error {
	id, err := strconv.ParseUint(rid, 16, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrUnknownRequest, rid)
	}
	sh := &s.shards[id%uint64(len(s.shards))]
	sh.mu.Lock()
	c := sh.calls[id]
	if c != nil && c.deviceID == deviceID {
		delete(sh.calls, id)
	} else {
		c = nil
	}
	sh.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownRequest, rid)
	}
	c.done <- &herd.MethodResult{Status: status, Payload: resultPayload(payload)}
	return nil
}

// resultPayload turns a device's response body into the payload member of
// the result: JSON as sent, null for an empty body, and a JSON string for
// a body that is not JSON.
func resultPayload(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(b) {
		return append(json.RawMessage(nil), b...)
	}
	s, _ := json.Marshal(string(b))
	return s
}
