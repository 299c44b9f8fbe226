// Package cluster is what a hub knows of the nodes that serve its store.
//
// Each `herd serve` is a node with an id (--node-id, or one kept in its
// data folder) and a lease: a row in the store that the node renews every
// few seconds while it runs and ends when it stops. A node whose lease
// lapsed without a stop is lost (killed, cut off, frozen). GET /cluster and
// `herd cluster status` show every node the store knows of.
//
// A device's connection is recorded with the node it is on, and a node
// records a disconnect only of a device still on it. So a node marks
// Disconnected only what cannot be connected: at its start, what it held
// itself before (it was killed) and what nodes without a lease held;
// while it runs, after each renewal, the devices of every node whose lease
// lapsed. A node that renews a lease that had lapsed records its own
// devices Connected again. Leases are read against each node's own clock:
// the nodes' clocks must agree to well within a lease.
//
// Several nodes serve one store in cluster mode (--nats; internal/mesh
// carries what they say to each other, docs/cluster.md); a node alone has
// a lease too, so that `herd cluster status` shows it.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
)

// Lease is what a node writes of itself each time it renews its lease.
type Lease struct {
	NodeID      string
	StartedTime time.Time
	RenewedTime time.Time
	LeaseUntil  time.Time
	Info
}

// Info is what a node says of itself at each renewal.
type Info struct {
	// RESTAddress and MQTTAddress are where its listeners are bound.
	RESTAddress, MQTTAddress string
	// ConnectedDevices is how many devices are connected to it.
	ConnectedDevices int64
	// Leader says it leads the cluster now (applies the
	// configurations), RunningJobs how many jobs it runs.
	Leader      bool
	RunningJobs int
	// Version is its herd version.
	Version string
}

// Store keeps the nodes' leases.
type Store interface {
	// RenewNode writes a node's lease, creating its row or replacing it
	// (a node that starts again clears its stop).
	RenewNode(ctx context.Context, l Lease) error
	// StopNode ends a node's lease at now: it shut down.
	StopNode(ctx context.Context, id string, now time.Time) error
	// Nodes returns every node's row in node id order, State unset.
	Nodes(ctx context.Context) ([]*herd.Node, error)
	// PurgeNodes deletes the rows of the nodes whose lease ended before
	// t and returns how many.
	PurgeNodes(ctx context.Context, before time.Time) (int, error)
	// DisconnectNode marks Disconnected, at at, the devices and modules
	// connected through a node, and returns how many.
	DisconnectNode(ctx context.Context, node string, at time.Time) (int64, error)
	// DisconnectOrphans marks Disconnected, at at, the devices and
	// modules connected through a node that holds no lease at at (lost,
	// stopped or unknown), and returns how many.
	DisconnectOrphans(ctx context.Context, at time.Time) (int64, error)
}

// Defaults of Config.
const (
	DefaultLease = 15 * time.Second
	// Forget is how long a node that stopped or was lost stays listed.
	Forget = 24 * time.Hour
)

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidNodeID checks a node id: 1-64 letters, digits, '-' or '_' (it is
// a token of NATS subjects).
func ValidNodeID(id string) error {
	if !nodeIDPattern.MatchString(id) {
		return herd.Errorf(herd.ErrArgumentInvalid, "node id %q: use 1-64 letters, digits, '-' or '_'", id)
	}
	return nil
}

// Config configures a node's Service.
type Config struct {
	Store  Store
	NodeID string
	// Info returns what the node says of itself at each renewal.
	Info func() Info
	// Clock gives the times of the lease and schedules its renewals.
	Clock clock.Clock
	// Lease is how long a renewal holds (0: DefaultLease); the node
	// renews every third of it.
	Lease time.Duration
	// Connected, if not nil, returns the devices and modules connected
	// to this node now. When the node renews a lease that had lapsed,
	// other nodes may have marked them Disconnected; it records them
	// Connected again through Reconnect.
	Connected func() []string
	// Reconnect records a device or module connected to this node at at.
	Reconnect func(id string, at time.Time)
	// Jobs, if not nil, returns the jobs that have not ended, with the
	// node running each at now, for Status.
	Jobs func(ctx context.Context, now time.Time) ([]*herd.ClusterJob, error)
	Log  *slog.Logger
}

// Service is a node's lease: it takes it at Start, renews it while Run
// runs and ends it when Run returns.
type Service struct {
	cfg     Config
	started time.Time
	purged  time.Time // the last purge of old nodes (Run's goroutine after Start)
}

// New returns the Service of a node; nothing is written before Start.
func New(cfg Config) (*Service, error) {
	if err := ValidNodeID(cfg.NodeID); err != nil {
		return nil, err
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Info == nil {
		cfg.Info = func() Info { return Info{} }
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Service{cfg: cfg}, nil
}

// NodeID is this node's id.
func (s *Service) NodeID() string { return s.cfg.NodeID }

// Start takes the node's lease, before the node serves. Nothing is
// connected to it yet: the devices its store still has Connected through
// it (it was killed) or through a node that holds no lease (lost or
// gone) are marked Disconnected; those of the nodes that run are left
// alone. A store that cannot write fails the start.
func (s *Service) Start(ctx context.Context) error {
	s.started = s.cfg.Clock.Now()
	if _, err := s.cfg.Store.DisconnectNode(ctx, s.cfg.NodeID, s.started); err != nil {
		return fmt.Errorf("node %s: %w", s.cfg.NodeID, err)
	}
	n, err := s.cfg.Store.DisconnectOrphans(ctx, s.started)
	if err != nil {
		return fmt.Errorf("node %s: %w", s.cfg.NodeID, err)
	}
	if n > 0 {
		s.cfg.Log.Info("cluster: devices of nodes that are gone marked Disconnected", "devices", n)
	}
	if err := s.renew(ctx, s.started); err != nil {
		return fmt.Errorf("node %s: take its lease: %w", s.cfg.NodeID, err)
	}
	s.purge(ctx, s.started)
	return nil
}

// sweep marks Disconnected the devices of the nodes whose lease lapsed
// without a stop (killed, cut off): they cannot be connected through it.
// Every node that runs does it after each renewal; it is idempotent, and
// a lost node with no devices left costs an index probe.
func (s *Service) sweep(ctx context.Context, now time.Time) {
	nodes, err := s.cfg.Store.Nodes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Log.Warn("cluster: could not read the nodes", "err", err)
		}
		return
	}
	for _, n := range nodes {
		if n.NodeID == s.cfg.NodeID || StateAt(n, now) != herd.NodeLost {
			continue
		}
		k, err := s.cfg.Store.DisconnectNode(ctx, n.NodeID, now)
		switch {
		case err != nil && ctx.Err() == nil:
			s.cfg.Log.Warn("cluster: could not mark a lost node's devices Disconnected", "node", n.NodeID, "err", err)
		case k > 0:
			s.cfg.Log.Warn("cluster: node lost; its devices marked Disconnected", "node", n.NodeID,
				"lease_until", n.LeaseUntil.String(), "devices", k)
		}
	}
}

// reconnect records again the devices connected to this node, after a
// lease that had lapsed: other nodes may have marked them Disconnected.
func (s *Service) reconnect(now time.Time) {
	if s.cfg.Connected == nil || s.cfg.Reconnect == nil {
		return
	}
	ids := s.cfg.Connected()
	for _, id := range ids {
		s.cfg.Reconnect(id, now)
	}
	s.cfg.Log.Warn("cluster: this node's lease had lapsed; its devices recorded Connected again", "node", s.cfg.NodeID, "devices", len(ids))
}

// purge forgets the nodes gone for longer than Forget; whichever node
// runs does it, at its start and then every purgeEvery.
func (s *Service) purge(ctx context.Context, now time.Time) {
	s.purged = now
	if _, err := s.cfg.Store.PurgeNodes(ctx, now.Add(-Forget)); err != nil && ctx.Err() == nil {
		s.cfg.Log.Warn("cluster: could not forget old nodes", "err", err)
	}
}

const purgeEvery = time.Hour

func (s *Service) renew(ctx context.Context, now time.Time) error {
	return s.cfg.Store.RenewNode(ctx, Lease{NodeID: s.cfg.NodeID, StartedTime: s.started, RenewedTime: now,
		LeaseUntil: now.Add(s.cfg.Lease), Info: s.cfg.Info()})
}

// Run renews the lease every third of its length until ctx ends. A
// renewal that fails is logged and tried again at the next tick.
func (s *Service) Run(ctx context.Context) {
	tick := make(chan struct{}, 1)
	var t clock.Timer
	schedule := func() {
		t = s.cfg.Clock.AfterFunc(s.cfg.Lease/3, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
	}
	schedule()
	lastOK := s.started
	for {
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-tick:
			now := s.cfg.Clock.Now()
			if err := s.renew(ctx, now); err != nil {
				if ctx.Err() == nil {
					s.cfg.Log.Warn("cluster: could not renew this node's lease", "node", s.cfg.NodeID, "err", err,
						"lease_until", herd.NewTime(lastOK.Add(s.cfg.Lease)).String())
				}
			} else {
				if now.After(lastOK.Add(s.cfg.Lease)) {
					s.reconnect(now)
				}
				lastOK = now
				s.sweep(ctx, now)
				if now.Sub(s.purged) >= purgeEvery {
					s.purge(ctx, now)
				}
			}
			schedule()
		}
	}
}

// Stop ends the node's lease: it has shut down.
func (s *Service) Stop(ctx context.Context) error {
	if err := s.cfg.Store.StopNode(ctx, s.cfg.NodeID, s.cfg.Clock.Now()); err != nil {
		return fmt.Errorf("node %s: end its lease: %w", s.cfg.NodeID, err)
	}
	return nil
}

// Status returns every node the store knows of, each with its state at
// this node's clock.
func (s *Service) Status(ctx context.Context) (*herd.ClusterStatus, error) {
	nodes, err := s.cfg.Store.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster nodes: %w", err)
	}
	if nodes == nil {
		nodes = []*herd.Node{}
	}
	now := s.cfg.Clock.Now()
	for _, n := range nodes {
		n.State = StateAt(n, now)
	}
	jobs := []*herd.ClusterJob{}
	if s.cfg.Jobs != nil {
		if jobs, err = s.cfg.Jobs(ctx, now); err != nil {
			return nil, fmt.Errorf("cluster jobs: %w", err)
		}
	}
	return &herd.ClusterStatus{NodeID: s.cfg.NodeID, Nodes: nodes, Jobs: jobs}, nil
}

// StateAt is a node's state at now.
func StateAt(n *herd.Node, now time.Time) herd.NodeState {
	switch {
	case !n.StoppedTime.IsZero():
		return herd.NodeStopped
	case n.LeaseUntil.After(now):
		return herd.NodeAlive
	}
	return herd.NodeLost
}
