// Package bus owns the answer to "which connection holds device X, and
// what is it subscribed to", and delivers domain events to that connection:
// desired-property changes (from twin writes) and direct-method requests
// (from internal/method). It also lets a caller wait, without polling, for
// an offline device to connect and subscribe to methods.
//
// This implementation is in-process: one node holds every connection. The
// seam is deliberately narrow (Attach/Detach/SetFeatures on the gateway
// side; Desired/WaitMethods on the domain side) so that a NATS-backed bus
// can route the same calls to the node that holds a device.
package bus

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Feature is a set of things a device connection subscribed to.
type Feature uint8

// SessionChange is a change to a device's persistent session (§8.3): its
// new subscription set, or Delete to discard the session.
type SessionChange struct {
	DeviceID      string
	Subscriptions Feature
	Delete        bool
	// Epoch is the epoch of the connection that made the change, in a
	// cluster (0 on a node alone): a store that keeps epochs writes the
	// change only while the device's connection epoch is still this one,
	// so that a late write from a node the device left changes nothing.
	Epoch int64
}

// Features a device can subscribe to (§8.6 of the compatibility reference).
const (
	// Methods: $iothub/methods/POST/# — the device is online for methods.
	Methods Feature = 1 << iota
	// TwinResponses: $iothub/twin/res/#.
	TwinResponses
	// Desired: $iothub/twin/PATCH/properties/desired/#.
	Desired
	// C2D: devices/{id}/messages/devicebound/#.
	C2D
)

// Has reports whether f includes every feature of g.
func (f Feature) Has(g Feature) bool { return f&g == g }

// MethodCall is one direct-method request on its way to a device.
type MethodCall struct {
	Name    string
	RID     string
	Payload []byte
	// Sent, if not nil, is called once the request has been written to
	// the device's connection (at most once).
	Sent func()
	// Dropped, if not nil, is called instead of Sent when the connection
	// closed before the request could be written.
	Dropped func()
}

// Conn is a device connection as the bus sees it. Its methods must not
// block: a connection that cannot take more is closed by its owner.
type Conn interface {
	// Features is what the connection is subscribed to now.
	Features() Feature
	// SendDesired delivers a desired-properties notification.
	SendDesired(version int64, body []byte)
	// SendMethod delivers a method request; false if the connection is
	// closed or not subscribed to methods (Dropped is then not called).
	SendMethod(c *MethodCall) bool
}

const shardCount = 64

// Bus tracks device connections and delivers to them.
type Bus struct {
	seed      maphash.Seed
	shards    [shardCount]shard
	connected atomic.Int64
	online    func(id string) // see OnOnline; nil: none
}

type shard struct {
	mu      sync.Mutex
	entries map[string]*entry
}

// entry is one device's state. ready is closed (and replaced by nil) when
// the device becomes online for methods; waiters counts callers waiting.
type entry struct {
	conn    Conn
	ready   chan struct{}
	waiters int
}

// New returns an empty bus.
func New() *Bus {
	b := &Bus{seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].entries = map[string]*entry{}
	}
	return b
}

// OnOnline has fn told each time a device becomes online for methods here
// (attached subscribed to methods, or subscribed since), after the bus
// has woken its local waiters: cluster mode tells the other nodes. Set it
// before the bus is used.
func (b *Bus) OnOnline(fn func(id string)) { b.online = fn }

func (b *Bus) shard(id string) *shard {
	return &b.shards[maphash.String(b.seed, id)%shardCount]
}

// Attach records that c now holds device id and returns the connection it
// replaces (nil if none); the caller closes that one.
func (b *Bus) Attach(id string, c Conn) (prev Conn) {
	s := b.shard(id)
	s.mu.Lock()
	e := s.entries[id]
	if e == nil {
		e = &entry{}
		s.entries[id] = e
	}
	prev, e.conn = e.conn, c
	if prev == nil {
		b.connected.Add(1)
	}
	methods := c.Features().Has(Methods)
	if methods {
		e.wake()
	}
	s.mu.Unlock()
	if methods && b.online != nil {
		b.online(id)
	}
	return prev
}

// Attached returns the ids of the devices (and modules) attached now, in
// no order.
func (b *Bus) Attached() []string {
	ids := make([]string, 0, b.connected.Load())
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		for id, e := range s.entries {
			if e.conn != nil {
				ids = append(ids, id)
			}
		}
		s.mu.Unlock()
	}
	return ids
}

// Detach forgets c as the holder of device id, unless another connection
// has taken over already. It reports whether c was the holder.
func (b *Bus) Detach(id string, c Conn) bool {
	s := b.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[id]
	if e == nil || e.conn != c {
		return false
	}
	e.conn = nil
	b.connected.Add(-1)
	if e.waiters == 0 {
		delete(s.entries, id)
	}
	return true
}

// FeaturesChanged tells the bus that c's subscriptions changed, so that
// callers waiting for the device to be online for methods wake up.
func (b *Bus) FeaturesChanged(id string, c Conn) {
	if !c.Features().Has(Methods) {
		return
	}
	s := b.shard(id)
	s.mu.Lock()
	holder := false
	if e := s.entries[id]; e != nil && e.conn == c {
		e.wake()
		holder = true
	}
	s.mu.Unlock()
	if holder && b.online != nil {
		b.online(id)
	}
}

func (e *entry) wake() {
	if e.ready != nil {
		close(e.ready)
		e.ready = nil
	}
}

// Lookup returns the connection holding device id, or nil.
func (b *Bus) Lookup(id string) Conn {
	s := b.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[id]; e != nil {
		return e.conn
	}
	return nil
}

// Connected is the number of devices holding a connection.
func (b *Bus) Connected() int64 { return b.connected.Load() }

// Desired delivers a desired-properties notification to device id if it is
// connected and subscribed to desired changes; otherwise it is dropped
// (devices re-read the twin when they reconnect, §4.3).
func (b *Bus) Desired(id string, version int64, body []byte) {
	if c := b.Lookup(id); c != nil && c.Features().Has(Desired) {
		c.SendDesired(version, body)
	}
}

// WaitMethods returns the connection of device id once it is online for
// methods (connected and subscribed to $iothub/methods/POST/#), waiting
// until ctx ends. It is woken by Attach and FeaturesChanged, never polls,
// and returns ctx.Err() when ctx ends first.
func (b *Bus) WaitMethods(ctx context.Context, id string) (Conn, error) {
	s := b.shard(id)
	s.mu.Lock()
	e := s.entries[id]
	if e != nil && e.conn != nil && e.conn.Features().Has(Methods) {
		c := e.conn
		s.mu.Unlock()
		return c, nil
	}
	if ctx.Err() != nil || ctx.Done() == nil {
		s.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, context.DeadlineExceeded
	}
	if e == nil {
		e = &entry{}
		s.entries[id] = e
	}
	e.waiters++
	defer func() {
		s.mu.Lock()
		e.waiters--
		if e.waiters == 0 && e.conn == nil && s.entries[id] == e {
			delete(s.entries, id)
		}
		s.mu.Unlock()
	}()
	for {
		if e.ready == nil {
			e.ready = make(chan struct{})
		}
		ready := e.ready
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ready:
		}
		s.mu.Lock()
		if e.conn != nil && e.conn.Features().Has(Methods) {
			c := e.conn
			s.mu.Unlock()
			return c, nil
		}
	}
}
