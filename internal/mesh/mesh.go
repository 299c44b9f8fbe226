// Package mesh is what the nodes of a cluster say to each other, over NATS
// ("Cluster mode" in the architecture).
//
// Each node listens on subjects of its own, herd.node.<id>.…, never one
// per device: direct methods for the devices connected to another node go
// to that node's calls subject in batches, as NATS requests that the node
// answers at once with whether it took them (NATS's immediate "no
// responders" says the node is gone); the devices' answers come back in
// batches to the caller's answers subject (calls.go). What every node must hear goes to
// herd.cluster.…: a device whose identity changed (its connection on any
// node is checked again or closed, key caches drop it), a desired-property
// change for a device that is not connected here, a device that connected
// (its older connection on another node is closed: session takeover), a
// device that came online for methods (calls waiting for it on other nodes look again), a
// job created or changed, the progress of a job (for the watchers of its
// events on every node). Device-to-cloud messages go to herd.events, and
// only while some node has monitors (herd monitor, GET /events) and says
// so. A node does not hear its own broadcasts.
//
// Which node holds a device is remembered from the online broadcasts and,
// failing that, read from the store (the connection's node,
// internal/cluster); what is remembered holds until the node it names says
// the device is not there.
package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herd-iot/herd"
)

// Subjects.
const (
	subjectDevice  = "herd.cluster.device"
	subjectDesired = "herd.cluster.desired"
	subjectOnline  = "herd.cluster.online"
	subjectAttach  = "herd.cluster.attached"
	subjectJobs    = "herd.cluster.jobs"
	subjectJob     = "herd.cluster.job"
	subjectChanged = "herd.cluster.changed"
	subjectConfigs = "herd.cluster.configurations"
	subjectMonitor = "herd.cluster.monitoring"
	subjectEvents  = "herd.events"
)

// monitorFor is how long a node sends its devices' messages after it last
// heard that a node has monitors; nodes with monitors say so every
// MonitorEvery.
const (
	monitorFor   = 10 * time.Second
	MonitorEvery = 3 * time.Second
)

// changedEvery is how often a node sends the devices whose twins or
// identities changed on it, in one message.
const changedEvery = 100 * time.Millisecond

// maxOwners bounds the owner cache (Mesh.owners): about 80 bytes an
// entry.
const maxOwners = 1 << 18

// answerMargin is how much longer than the device's response timeout a
// node waits for another node's answer to a method.
const answerMargin = 5 * time.Second

// Presence says which node a device is connected to.
type Presence interface {
	// ConnectedNode returns the node a device (or module) is connected
	// through, or "" if it is not connected.
	ConnectedNode(ctx context.Context, id string) (string, error)
}

// Config configures a node's Mesh.
type Config struct {
	// URL is the NATS server (nats://host:4222; several comma-separated).
	URL    string
	NodeID string
	// Presence is the store's record of connections.
	Presence Presence
	Log      *slog.Logger
}

// Handlers is what a node does with what the others say.
type Handlers struct {
	// Invoke calls a method on a device connected here, without waiting
	// for it to connect.
	Invoke func(ctx context.Context, deviceID string, req herd.MethodRequest) (*herd.MethodResult, error)
	// DeviceChanged: a device's (or module's) identity changed or it was
	// deleted.
	DeviceChanged func(id string)
	// Desired: a desired-properties change for a device; routed says it
	// was sent to this node alone, which the writer saw holding the
	// device (else it was broadcast).
	Desired func(id string, version int64, body []byte, routed bool)
	// Online: a device came online for methods on another node.
	Online func(id string)
	// Attached: a device connected to another node at at, with its
	// connection epoch (0 from a node without); an older connection here
	// is to be closed (session takeover).
	Attached func(id string, at time.Time, epoch int64)
	// JobsChanged: a job was created, cancelled, paused or resumed.
	JobsChanged func()
	// JobProgress: a note of another node's job progress (its JSON).
	JobProgress func(note []byte)
	// Changed: devices whose twin or identity changed on another node
	// (for the configurations and continuous jobs the leader applies).
	Changed func(ids []string)
	// ConfigurationsChanged: a configuration was created, changed or
	// deleted on another node.
	ConfigurationsChanged func()
	// Event: a device-to-cloud message another node received, for the
	// monitors here.
	Event func(*herd.Event)
}

// Mesh is a node's NATS connection.
type Mesh struct {
	cfg Config
	nc  *nats.Conn

	// monitored is until when (Unix nanoseconds) a node has monitors:
	// this node's devices' messages are sent until then.
	monitored atomic.Int64

	// answerMu guards draining: once it is set, other nodes' method calls
	// are refused; answering counts those being answered.
	answerMu  sync.Mutex
	draining  bool
	answering sync.WaitGroup

	mu sync.Mutex
	// owners is the node each device was last known to be connected to,
	// from the online broadcasts and the store's answers. An entry holds
	// until it is contradicted: another node's online broadcast, or the
	// node it names answering that the device is not there (Invoke drops
	// it then), so that a method job does not read the store for each
	// device. At most maxOwners entries; an arbitrary one goes when full.
	owners map[string]string
	names  map[string]string // node ids, interned
	calls  callState
	// desiredQ is the desired changes to send (sendDesired).
	desiredQ chan desiredOut
	senders  sync.WaitGroup      // the goroutines sending calls and answers
	changed  map[string]struct{} // to send with the next batch
	stop     chan struct{}
	done     chan struct{}
	// closed closes when the connection is; desiredDone when the desired
	// changes received are handled (nil before Serve).
	closed      chan struct{}
	desiredDone chan struct{}
}

// Connect dials the NATS server. It fails when the server cannot be
// reached now; once connected, the connection is restored on its own.
func Connect(cfg Config) (*Mesh, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := &Mesh{cfg: cfg, owners: map[string]string{}, names: map[string]string{}, changed: map[string]struct{}{}, stop: make(chan struct{}), done: make(chan struct{}), closed: make(chan struct{}),
		desiredQ: make(chan desiredOut, 8192)}
	nc, err := nats.Connect(cfg.URL,
		nats.Name("herd node "+cfg.NodeID),
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DrainTimeout(drainTimeout),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if !c.IsClosed() && !c.IsDraining() {
				cfg.Log.Warn("cluster: NATS connection lost; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			cfg.Log.Info("cluster: NATS connection restored", "server", c.ConnectedUrlRedacted())
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", cfg.URL, err)
	}
	m.nc = nc
	go m.forget()
	m.senders.Add(1)
	go m.sendDesired()
	return m, nil
}

// Serve subscribes the node to its subjects and the cluster's, handled by
// h.
func (m *Mesh) Serve(h Handlers) error {
	sub := func(subject string, fn nats.MsgHandler) error {
		s, err := m.nc.Subscribe(subject, fn)
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		s.SetPendingLimits(-1, 256<<20)
		return nil
	}
	return errors.Join(
		sub(callsSubject(m.cfg.NodeID), func(msg *nats.Msg) { m.takeCalls(msg, h.Invoke) }),
		sub(answersSubject(m.cfg.NodeID), m.takeAnswers),
		sub(subjectDevice, func(msg *nats.Msg) { h.DeviceChanged(string(msg.Data)) }),
		m.serveDesired(h.Desired),
		sub(subjectOnline, func(msg *nats.Msg) {
			var o online
			if err := json.Unmarshal(msg.Data, &o); err != nil {
				m.cfg.Log.Warn("cluster: an online notice that does not parse", "err", err)
				return
			}
			m.mu.Lock()
			m.setOwner(o.ID, o.Node)
			m.mu.Unlock()
			h.Online(o.ID)
		}),
		sub(subjectAttach, func(msg *nats.Msg) {
			var a attached
			if err := json.Unmarshal(msg.Data, &a); err != nil {
				m.cfg.Log.Warn("cluster: a connection notice that does not parse", "err", err)
				return
			}
			h.Attached(a.ID, time.Unix(0, a.At), a.Epoch)
		}),
		sub(subjectJobs, func(*nats.Msg) { h.JobsChanged() }),
		sub(subjectJob, func(msg *nats.Msg) { h.JobProgress(msg.Data) }),
		sub(subjectChanged, func(msg *nats.Msg) { h.Changed(strings.Split(string(msg.Data), "\n")) }),
		sub(subjectConfigs, func(*nats.Msg) { h.ConfigurationsChanged() }),
		sub(subjectMonitor, func(*nats.Msg) { m.monitored.Store(time.Now().Add(monitorFor).UnixNano()) }),
		sub(subjectEvents, func(msg *nats.Msg) {
			var e herd.Event
			if err := json.Unmarshal(msg.Data, &e); err != nil {
				m.cfg.Log.Warn("cluster: a device message that does not parse", "err", err)
				return
			}
			h.Event(&e)
		}),
		m.nc.Flush(),
	)
}

// Close ends the subscriptions and the connection: the messages already
// on their way to this node are still handled (a method call is answered,
// if only with a refusal, rather than left to time out), and what was
// published is sent.
func (m *Mesh) Close() {
	defer m.endDesired()
	close(m.stop)
	<-m.done
	m.senders.Wait() // answers and calls queued are handed to NATS
	closed := make(chan struct{})
	m.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := m.nc.Drain(); err != nil {
		m.nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(drainTimeout + time.Second):
		m.nc.Close()
	}
}

// endDesired lets the desired changes received be handled, once the
// connection is closed.
func (m *Mesh) endDesired() {
	close(m.closed)
	if m.desiredDone != nil {
		<-m.desiredDone
	}
}

// drainTimeout bounds how long Close waits for the messages on their way.
const drainTimeout = 5 * time.Second

// forget sends the changed devices every changedEvery (and a last time at
// Close).
func (m *Mesh) forget() {
	defer close(m.done)
	t := time.NewTicker(changedEvery)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			m.sendChanged()
			return
		case <-t.C:
			m.sendChanged()
		}
	}
}

// setOwner records that device id is on node; m.mu is held.
func (m *Mesh) setOwner(id, node string) {
	name, ok := m.names[node]
	if !ok {
		name = node
		m.names[node] = name
	}
	if _, ok := m.owners[id]; !ok && len(m.owners) >= maxOwners {
		for other := range m.owners {
			delete(m.owners, other)
			break
		}
	}
	m.owners[id] = name
}

// dropOwner forgets that device id is on node, if that is what is known.
func (m *Mesh) dropOwner(id, node string) {
	m.mu.Lock()
	if m.owners[id] == node {
		delete(m.owners, id)
	}
	m.mu.Unlock()
}

// maxChangedMessage bounds one message of changed devices (NATS's
// default payload limit is 1 MB).
const maxChangedMessage = 512 << 10

func (m *Mesh) sendChanged() {
	m.mu.Lock()
	if len(m.changed) == 0 {
		m.mu.Unlock()
		return
	}
	ids := m.changed
	m.changed = map[string]struct{}{}
	m.mu.Unlock()
	var b strings.Builder
	for id := range ids {
		if b.Len() > 0 && b.Len()+len(id)+1 > maxChangedMessage {
			m.publish(subjectChanged, []byte(b.String()))
			b.Reset()
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(id)
	}
	m.publish(subjectChanged, []byte(b.String()))
}

// Owner returns the other node a device is connected to, or "" (the
// method service's Remote).
func (m *Mesh) Owner(ctx context.Context, id string) (string, error) {
	m.mu.Lock()
	node, ok := m.owners[id]
	m.mu.Unlock()
	if !ok {
		var err error
		if node, err = m.cfg.Presence.ConnectedNode(ctx, id); err != nil {
			return "", err
		}
		if node != "" && node != m.cfg.NodeID {
			m.mu.Lock()
			m.setOwner(id, node)
			m.mu.Unlock()
		}
	}
	if node == m.cfg.NodeID {
		return "", nil
	}
	return node, nil
}

// Drain refuses the method calls that other nodes send from now on (with
// DeviceNotOnline: a caller that may wait looks for the device again, as
// for a device that moved) and waits until those being answered are, or
// ctx ends. A node that shuts down drains before it closes its devices,
// so that no call it accepted is cut off by the close.
func (m *Mesh) Drain(ctx context.Context) error {
	m.answerMu.Lock()
	m.draining = true
	m.answerMu.Unlock()
	done := make(chan struct{})
	go func() {
		m.answering.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type desired struct {
	ID      string          `json:"id"`
	Version int64           `json:"version"`
	Body    json.RawMessage `json:"body"`
}

type online struct {
	ID   string `json:"id"`
	Node string `json:"node"`
}

// publish sends a broadcast; a failure (the connection is down and its
// buffer full) is logged: the other nodes miss it.
func (m *Mesh) publish(subject string, data []byte) {
	if err := m.nc.Publish(subject, data); err != nil {
		m.cfg.Log.Warn("cluster: could not tell the other nodes", "subject", subject, "err", err)
	}
}

// DeviceChanged tells the other nodes that a device's identity changed.
func (m *Mesh) DeviceChanged(id string) { m.publish(subjectDevice, []byte(id)) }

// desiredSubject is where a node is sent the desired changes of the
// devices it holds.
func desiredSubject(node string) string { return "herd.node." + node + ".desired" }

// desiredOut is a desired change queued for node ("": every node).
type desiredOut struct {
	node string
	b    []byte
}

// Desired tells the other nodes of a desired-properties change, for the
// node the device is connected to.
//
// The changes travel in batches, in order: what has queued while the
// previous batch was being sent (a twin job's changes for many devices go
// in a few messages; a lone change goes at once).
func (m *Mesh) Desired(id string, version int64, body []byte) { m.queueDesired("", id, version, body) }

// DesiredTo sends a desired-properties change to the node that holds the
// device's connection, instead of to every node; batched as Desired's.
// That node broadcasts it if the device has left it meanwhile.
func (m *Mesh) DesiredTo(node, id string, version int64, body []byte) {
	m.queueDesired(node, id, version, body)
}

func (m *Mesh) queueDesired(node, id string, version int64, body []byte) {
	b, err := json.Marshal(desired{ID: id, Version: version, Body: body})
	if err != nil {
		m.cfg.Log.Warn("cluster: a desired change that does not encode", "device_id", id, "version", version, "err", err)
		return
	}
	select {
	case m.desiredQ <- desiredOut{node, b}:
	case <-m.stop:
	}
}

// maxDesiredWaiting bounds the desired messages received and not yet
// handled (each at most maxChangedMessage); more are dropped, as NATS
// drops a slow consumer's.
const maxDesiredWaiting = 1 << 14

// serveDesired subscribes to the desired changes sent to every node and
// to those sent to this one. Both go through one channel, handled by one
// goroutine, so that they are handled in the order they arrived: two
// subscriptions with handlers would each have their own goroutine.
func (m *Mesh) serveDesired(handle func(string, int64, []byte, bool)) error {
	in := make(chan *nats.Msg, maxDesiredWaiting)
	mine := desiredSubject(m.cfg.NodeID)
	for _, subject := range []string{subjectDesired, mine} {
		if _, err := m.nc.ChanSubscribe(subject, in); err != nil {
			return fmt.Errorf("subscribe to %s: %w", subject, err)
		}
	}
	m.desiredDone = make(chan struct{})
	go func() {
		defer close(m.desiredDone)
		take := func(msg *nats.Msg) {
			var ds []desired
			if err := json.Unmarshal(msg.Data, &ds); err != nil {
				m.cfg.Log.Warn("cluster: desired changes that do not parse", "err", err)
				return
			}
			for _, d := range ds {
				handle(d.ID, d.Version, d.Body, msg.Subject == mine)
			}
		}
		for {
			select {
			case msg := <-in:
				take(msg)
			case <-m.closed:
				for {
					select {
					case msg := <-in:
						take(msg)
					default:
						return
					}
				}
			}
		}
	}()
	return nil
}

// sendDesired publishes the queued desired changes as JSON arrays of at
// most maxChangedMessage bytes, one batch per destination, until the mesh
// closes (what is queued then is sent). A device's changes keep their
// order at the node that holds it: a change to every node is not sent
// ahead of the routed ones queued before it, nor a routed one ahead of
// the changes to every node queued before it (NATS keeps the order of
// one publisher's messages).
func (m *Mesh) sendDesired() {
	defer m.senders.Done()
	bufs := map[string][]byte{}
	send := func(node string, buf []byte) {
		subject := subjectDesired
		if node != "" {
			subject = desiredSubject(node)
		}
		m.publish(subject, append(buf, ']'))
	}
	flush := func(broadcast bool) {
		for node, buf := range bufs {
			if len(buf) > 0 && (node == "") == broadcast {
				send(node, buf)
				bufs[node] = buf[:0]
			}
		}
	}
	add := func(o desiredOut) {
		flush(o.node != "") // what was queued for the other kind of destination goes first
		buf := bufs[o.node]
		if len(buf) > 0 && len(buf)+len(o.b)+2 > maxChangedMessage {
			send(o.node, buf)
			buf = buf[:0]
		}
		if len(buf) == 0 {
			buf = append(buf, '[')
		} else {
			buf = append(buf, ',')
		}
		bufs[o.node] = append(buf, o.b...)
	}
	for {
		stopping := false
		select {
		case o := <-m.desiredQ:
			add(o)
		case <-m.stop:
			stopping = true
		}
	more:
		for {
			select {
			case o := <-m.desiredQ:
				add(o)
			default:
				break more
			}
		}
		flush(true)
		flush(false)
		if stopping {
			return
		}
	}
}

// Online tells the other nodes that a device came online for methods here.
func (m *Mesh) Online(id string) {
	b, _ := json.Marshal(online{ID: id, Node: m.cfg.NodeID})
	m.publish(subjectOnline, b)
}

type attached struct {
	ID    string `json:"id"`
	At    int64  `json:"at"`              // Unix nanoseconds
	Epoch int64  `json:"epoch,omitempty"` // absent from nodes before epochs
}

// Attached tells the other nodes that a device connected here at at, with
// connection epoch (see gateway.Presence).
func (m *Mesh) Attached(id string, at time.Time, epoch int64) {
	b, _ := json.Marshal(attached{ID: id, At: at.UnixNano(), Epoch: epoch})
	m.publish(subjectAttach, b)
}

// Changed tells the other nodes, with the next batch, that a device's
// twin or identity changed here.
func (m *Mesh) Changed(id string) {
	m.mu.Lock()
	m.changed[id] = struct{}{}
	m.mu.Unlock()
}

// ConfigurationsChanged tells the other nodes that a configuration was
// created, changed or deleted.
func (m *Mesh) ConfigurationsChanged() { m.publish(subjectConfigs, nil) }

// Monitoring tells the other nodes that this node has monitors: they send
// it their devices' messages for monitorFor. Call it when a monitor
// subscribes and every MonitorEvery while there are any.
func (m *Mesh) Monitoring() { m.publish(subjectMonitor, nil) }

// Event sends a device-to-cloud message received here to the nodes with
// monitors, if any node has said it has some lately.
func (m *Mesh) Event(e *herd.Event) {
	if time.Now().UnixNano() >= m.monitored.Load() {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		m.cfg.Log.Warn("cluster: a device message that does not encode", "device_id", e.DeviceID, "err", err)
		return
	}
	m.publish(subjectEvents, b)
}

// JobsChanged tells the other nodes that a job was created or changed.
func (m *Mesh) JobsChanged() { m.publish(subjectJobs, nil) }

// JobProgress tells the other nodes of a note of a job's progress (JSON).
func (m *Mesh) JobProgress(note []byte) { m.publish(subjectJob, note) }
