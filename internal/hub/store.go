package hub

import (
	"context"
	"slices"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/batch"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/certauth"
	"github.com/herd-iot/herd/internal/cluster"
	"github.com/herd-iot/herd/internal/config"
	"github.com/herd-iot/herd/internal/gateway"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/mesh"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// Store is everything a hub keeps: the Store of every domain service, the
// gateway's persistent sessions and the hub's own settings. cmd/herd picks
// the implementation (internal/store/sqlite by default; --store chooses
// another); the hub owns the store it is given and closes it.
type Store interface {
	registry.Store
	twin.Store
	auth.Store
	certauth.Store
	job.Store
	config.Store
	query.Store
	gateway.SessionStore
	cluster.Store
	mesh.Presence
	// DevicesAndSessions reads many devices (not modules) and the
	// persistent sessions of those that have one, in one read: the key
	// lookups of a connect burst, whose connects then need no session
	// read of their own (gateway.Server.LearnSessions).
	DevicesAndSessions(ctx context.Context, ids []string) (map[string]*herd.Device, map[string]bus.Feature, error)
	// Setting and SetSetting keep small named values: the host name and
	// the listeners' addresses, which the CLI reads.
	Setting(ctx context.Context, name string) (string, error)
	SetSetting(ctx context.Context, name, value string) error
	// Ping checks that the store answers (GET /readyz).
	Ping(ctx context.Context) error
	Close() error
}

// Claimer is a store that several hubs could open at once (a database
// server): Claim makes the hub that calls it the only one serving the
// store until the store is closed, or fails if another hub serves it. A
// hub alone keeps its bus, caches and job engine to itself; the nodes of a
// cluster (ClusterStore) share the store instead. A store in one file
// needs no claim.
type Claimer interface {
	Claim(ctx context.Context) error
}

// ClusterStore is a store that the nodes of a cluster share (--nats).
type ClusterStore interface {
	// Join makes the hub node of the cluster until the store is closed;
	// it fails while a hub serves the store alone (Claim), or another
	// node with the same id serves it.
	Join(ctx context.Context, node string) error
	// Lead waits until this node is the one that leads the cluster,
	// applying the configurations (trying every interval), and returns a
	// channel closed when it no longer is.
	Lead(ctx context.Context, every time.Duration) (<-chan struct{}, error)
	// Unlead hands the lead over: another node's Lead may succeed.
	Unlead(ctx context.Context) error
	// ClaimConnections records the connections of devices and modules
	// accepted at at as node's and raises each one's connection epoch:
	// the new epochs, for those registered (see gateway.Presence).
	ClaimConnections(ctx context.Context, node string, ids []string, at time.Time) (map[string]int64, error)
	// JobLeases are the leases through which node's job engine shares
	// the jobs with the other nodes' engines.
	JobLeases(node string) job.Leases
}

// presence claims connections for the gateway in a cluster: the claims of
// a connect burst go to the store together (one statement per batch).
type presence struct {
	claims *batch.Loader[string, int64]
}

// maxClaimBatch bounds the connections claimed in one statement.
const maxClaimBatch = 512

func newPresence(store ClusterStore, node string, now func() time.Time) *presence {
	return &presence{claims: batch.New(func(ctx context.Context, ids []string) (map[string]int64, error) {
		// A device that connects twice at once is claimed once: both
		// connections get that epoch, and the gateway keeps the later.
		return store.ClaimConnections(ctx, node, slices.Compact(slices.Sorted(slices.Values(ids))), now())
	}, maxClaimBatch, 10*time.Second)}
}

// Claim claims the connection of id. It returns once the claim's batch
// has ended, even after ctx has: the batch runs for every connect waiting
// in it, and a claim that commits after its caller left would leave the
// device recorded Connected with no connection behind it. The caller gets
// the epoch and, seeing ctx ended, records the connection Disconnected.
// The batch's own timeout bounds the wait.
func (p *presence) Claim(ctx context.Context, id string) (int64, error) {
	epoch, found, err := p.claims.Load(context.WithoutCancel(ctx), id)
	if err != nil {
		return 0, err
	}
	if !found {
		if _, mod := herd.SplitIdentity(id); mod != "" {
			return 0, herd.Errorf(herd.ErrModuleNotFound, "module %q does not exist", id)
		}
		return 0, herd.Errorf(herd.ErrDeviceNotFound, "device %q does not exist", id)
	}
	return epoch, nil
}
