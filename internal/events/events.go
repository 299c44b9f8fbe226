// Package events owns the live stream of device-to-cloud messages on the
// service side: the gateway publishes every telemetry message here, and
// monitors (GET /events, `herd monitor`) subscribe. It is a fan-out with a
// bounded buffer per subscriber; a subscriber that does not keep up loses
// messages (and is told how many), it never slows devices.
package events

import (
	"sync"
	"sync/atomic"

	"github.com/herd-iot/herd"
)

// Stream fans telemetry out to subscribers.
type Stream struct {
	mu     sync.RWMutex
	subs   map[*Sub]struct{}
	closed chan struct{}
	once   sync.Once
	// onSubscribe is told of each new subscriber (nil: none).
	onSubscribe func()
}

// OnSubscribe has fn told of each new subscriber, after it is subscribed
// (in a cluster, the other nodes start sending their devices' messages).
// Set it before the stream is used.
func (s *Stream) OnSubscribe(fn func()) { s.onSubscribe = fn }

// New returns a stream with no subscribers.
func New() *Stream {
	return &Stream{subs: map[*Sub]struct{}{}, closed: make(chan struct{})}
}

// Sub is one subscriber.
type Sub struct {
	s        *Stream
	deviceID string
	c        chan *herd.Event
	dropped  atomic.Int64
}

// Publish hands e to every interested subscriber without blocking.
func (s *Stream) Publish(e *herd.Event) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for sub := range s.subs {
		if sub.deviceID != "" && sub.deviceID != e.DeviceID {
			continue
		}
		select {
		case sub.c <- e:
		default:
			sub.dropped.Add(1)
		}
	}
}

// Subscribe returns a subscriber for one device's messages ("" for all)
// with room for buffer messages.
func (s *Stream) Subscribe(deviceID string, buffer int) *Sub {
	sub := &Sub{s: s, deviceID: deviceID, c: make(chan *herd.Event, buffer)}
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	if s.onSubscribe != nil {
		s.onSubscribe()
	}
	return sub
}

// Subscribers is the number of subscribers now.
func (s *Stream) Subscribers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.subs)
}

// Close ends every subscription's Done channel (at hub shutdown).
func (s *Stream) Close() { s.once.Do(func() { close(s.closed) }) }

// Done is closed when the stream shuts down.
func (s *Stream) Done() <-chan struct{} { return s.closed }

// C delivers the subscriber's messages.
func (sub *Sub) C() <-chan *herd.Event { return sub.c }

// Dropped returns and resets the number of messages lost because the
// subscriber's buffer was full.
func (sub *Sub) Dropped() int64 { return sub.dropped.Swap(0) }

// Close unsubscribes.
func (sub *Sub) Close() {
	sub.s.mu.Lock()
	delete(sub.s.subs, sub)
	sub.s.mu.Unlock()
}
