// Package registry owns device identities: creating, updating and deleting
// devices (one at a time or in bulk), their keys and status, and their
// connection state, which it records in batches rather than per packet.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/batch"
	"github.com/herd-iot/herd/internal/twin"
)

// OpKind says what an Op does.
type OpKind int

// Operation kinds.
const (
	OpCreate OpKind = iota
	OpUpdate
	OpDelete
)

// Op is one registry write. The store applies a list of them in one
// transaction and reports an outcome for each.
type Op struct {
	Kind     OpKind
	DeviceID string
	// Device and Twin are the new device and its initial twin (OpCreate).
	Device *herd.Device
	Twin   *twin.Doc
	// Change edits the current device in place (OpUpdate) or checks a
	// precondition (OpDelete); an error aborts this op only.
	Change func(cur *herd.Device) error
	// CreateIfMissing turns an OpUpdate of an unknown device into an
	// OpCreate of Device and Twin.
	CreateIfMissing bool
}

// Result is the outcome of one Op: the device as written, or a *herd.Error.
type Result struct {
	Device *herd.Device
	Err    error
}

// ConnectionChange records a device's connection state or activity.
type ConnectionChange struct {
	DeviceID string
	// Node is the node the connection is on. Connected makes it the
	// device's node; Disconnected is recorded only if it still is (a
	// device that moved to another node stays Connected there).
	Node string
	// State is set on connect and disconnect; "" only records activity.
	State herd.ConnectionState
	// StateAt is when State changed.
	StateAt time.Time
	// ActivityAt is the device's last activity, or zero.
	ActivityAt time.Time
	// Epoch is the connection's epoch in a cluster (see
	// hub.ClusterStore's ClaimConnections), 0 on a node alone. With an
	// epoch, State is recorded only while the device's stored epoch is
	// still this one: a node the device has left changes nothing.
	Epoch int64
}

// Store keeps device identities.
type Store interface {
	// ApplyDevices runs ops in one transaction. An op that fails leaves no
	// trace and does not stop the others; the returned error is for
	// failures of the store itself.
	ApplyDevices(ctx context.Context, ops []Op) ([]Result, error)
	Device(ctx context.Context, id string) (*herd.Device, error)
	// DevicesByID reads many devices at once: those of ids that exist.
	DevicesByID(ctx context.Context, ids []string) (map[string]*herd.Device, error)
	Devices(ctx context.Context, limit int) ([]*herd.Device, error)
	RegistryStatistics(ctx context.Context) (herd.RegistryStatistics, error)
	SetConnectionStates(ctx context.Context, changes []ConnectionChange) error
	ModuleStore
}

// ChangeFunc is told, after commit, that a device's identity was updated or
// deleted, so that a live connection can be checked again or closed — the
// device's and its modules' — or, given a module's identity
// (herd.ModuleIdentity), that a module's was.
type ChangeFunc func(deviceID string)

// Service manages the device registry.
type Service struct {
	store    Store
	node     string // the node the connections recorded here are on
	now      func() time.Time
	onChange ChangeFunc
	onTwin   func(deviceID string) // after a create or an update (nil: none)
	log      *slog.Logger

	keysMu sync.RWMutex
	keys   map[string]auth.DeviceKeys // by connection identity (device, or device/module)
	// moduleKeys lists the module identities cached in keys, by device,
	// so that a change of the device forgets them too.
	moduleKeys map[string]map[string]struct{}
	// keysGen rises on every forget, so that a Keys call whose store
	// read raced with an update does not cache the keys it read.
	keysGen uint64
	// keyReads gathers the key lookups of a connect burst that the cache
	// missed into one store read.
	keyReads *batch.Loader[string, *herd.Device]

	connMu   sync.Mutex
	pending  map[string]ConnectionChange
	flushing map[string]ConnectionChange // the batch being written
}

// NewService returns a registry service; the connections it records
// are on node. onChange may be nil.
func NewService(store Store, node string, now func() time.Time, onChange ChangeFunc, log *slog.Logger) *Service {
	if onChange == nil {
		onChange = func(string) {}
	}
	return &Service{
		store: store, node: node, now: now, onChange: onChange, log: log,
		keys: map[string]auth.DeviceKeys{}, moduleKeys: map[string]map[string]struct{}{},
		keyReads: batch.New(func(ctx context.Context, ids []string) (map[string]*herd.Device, error) {
			return store.DevicesByID(ctx, ids)
		}, maxKeyBatch, keyReadTimeout),
		pending: map[string]ConnectionChange{},
	}
}

// ReadKeysWith makes the key lookups that miss the cache read devices with
// read instead of the store's DevicesByID: the hub reads the devices'
// persistent sessions in the same store read, for the gateway. Call it
// before the service is used.
func (s *Service) ReadKeysWith(read func(ctx context.Context, ids []string) (map[string]*herd.Device, error)) {
	s.keyReads = batch.New(read, maxKeyBatch, keyReadTimeout)
}

// Key lookups read together: at most this many devices in one read, each
// read bounded by the timeout.
const (
	maxKeyBatch    = 512
	keyReadTimeout = 10 * time.Second
)

// newGenerationID returns a fresh generation id: a random 18-digit decimal,
// the form Azure uses.
func newGenerationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	n := binary.BigEndian.Uint64(b[:])%900000000000000000 + 100000000000000000
	return strconv.FormatUint(n, 10)
}

// prepareCreate validates a device from a client and fills in everything the
// hub owns.
func (s *Service) prepareCreate(d *herd.Device) error {
	if err := normalize(d, true); err != nil {
		return err
	}
	d.GenerationID = newGenerationID()
	if d.Capabilities.IoTEdge {
		d.DeviceScope = EdgeScope(d.DeviceID, d.GenerationID)
	}
	d.ConnectionState = herd.Disconnected
	d.ConnectionStateUpdatedTime = herd.Time{}
	d.StatusUpdatedTime = herd.Time{}
	d.LastActivityTime = herd.Time{}
	d.CloudToDeviceMessageCount = 0
	return nil
}

// OnTwinChange makes the service call fn after each device it creates or
// updates commits (a bulk import may set tags); fn must not block.
// Automatic device configurations (internal/config) follow devices with
// it.
func (s *Service) OnTwinChange(fn func(deviceID string)) { s.onTwin = fn }

// Create registers a new device. Empty keys are generated.
func (s *Service) Create(ctx context.Context, d herd.Device) (*herd.Device, error) {
	if err := s.prepareCreate(&d); err != nil {
		return nil, err
	}
	if err := s.checkCreateScopes(ctx, &d); err != nil {
		return nil, err
	}
	return s.one(ctx, Op{Kind: OpCreate, DeviceID: d.DeviceID, Device: &d, Twin: twin.NewDoc(s.now())})
}

// Update replaces a device's writable fields (status, statusReason,
// authentication, capabilities, scopes). ifMatch is "", "*" or the current
// etag. Empty sas keys keep the current keys.
func (s *Service) Update(ctx context.Context, d herd.Device, ifMatch string) (*herd.Device, error) {
	if err := normalize(&d, false); err != nil {
		return nil, err
	}
	if err := s.checkScopes(ctx, &d); err != nil {
		return nil, err
	}
	return s.one(ctx, Op{Kind: OpUpdate, DeviceID: d.DeviceID, Change: s.updater(d, ifMatch)})
}

// updater returns the Change that applies an update to the current device.
func (s *Service) updater(d herd.Device, ifMatch string) func(*herd.Device) error {
	return func(cur *herd.Device) error {
		if err := twin.CheckETag(ifMatch, cur.ETag); err != nil {
			return err
		}
		if d.Status != cur.Status {
			cur.StatusUpdatedTime = herd.NewTime(s.now())
		}
		a := d.Authentication
		if a.Type == herd.AuthSAS {
			old := cur.Authentication.SymmetricKey
			if a.SymmetricKey.PrimaryKey == "" {
				a.SymmetricKey.PrimaryKey = keyOrNew(old.PrimaryKey)
			}
			if a.SymmetricKey.SecondaryKey == "" {
				a.SymmetricKey.SecondaryKey = keyOrNew(old.SecondaryKey)
			}
		}
		cur.Status = d.Status
		cur.StatusReason = d.StatusReason
		cur.Authentication = a
		cur.Capabilities = d.Capabilities
		cur.DeviceScope = d.DeviceScope // checked by checkScopes
		if d.Capabilities.IoTEdge {
			cur.DeviceScope = EdgeScope(cur.DeviceID, cur.GenerationID)
		}
		cur.ParentScopes = d.ParentScopes
		return nil
	}
}

// Delete removes a device and its twin. ifMatch is "", "*" or the etag.
func (s *Service) Delete(ctx context.Context, id, ifMatch string) error {
	_, err := s.one(ctx, Op{Kind: OpDelete, DeviceID: id, Change: func(cur *herd.Device) error {
		return twin.CheckETag(ifMatch, cur.ETag)
	}})
	return err
}

func (s *Service) one(ctx context.Context, op Op) (*herd.Device, error) {
	res, err := s.apply(ctx, []Op{op})
	if err != nil {
		return nil, err
	}
	if res[0].Err != nil {
		return nil, res[0].Err
	}
	s.overlay(res[0].Device)
	return res[0].Device, nil
}

func (s *Service) apply(ctx context.Context, ops []Op) ([]Result, error) {
	res, err := s.store.ApplyDevices(ctx, ops)
	if err != nil {
		return nil, err
	}
	for i, op := range ops {
		if res[i].Err == nil && op.Kind != OpCreate {
			s.forget(op.DeviceID)
			s.onChange(op.DeviceID)
		}
		if res[i].Err == nil && op.Kind != OpDelete && s.onTwin != nil {
			s.onTwin(op.DeviceID)
		}
	}
	return res, nil
}

// Get returns a device.
func (s *Service) Get(ctx context.Context, id string) (*herd.Device, error) {
	if err := ValidateDeviceID(id); err != nil {
		return nil, herd.Errorf(herd.ErrDeviceNotFound, "device %q does not exist", id)
	}
	d, err := s.store.Device(ctx, id)
	if err != nil {
		return nil, err
	}
	s.overlay(d)
	return d, nil
}

// List returns up to limit devices in id order; limit outside 1..1000 means
// 1000, as in Azure.
func (s *Service) List(ctx context.Context, limit int) ([]*herd.Device, error) {
	if limit < 1 || limit > 1000 {
		limit = 1000
	}
	ds, err := s.store.Devices(ctx, limit)
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		s.overlay(d)
	}
	return ds, nil
}

// Statistics counts the registry's devices.
func (s *Service) Statistics(ctx context.Context) (herd.RegistryStatistics, error) {
	return s.store.RegistryStatistics(ctx)
}

// Keys returns a device's credentials for authentication, from a cache that
// every update and delete through this service invalidates.
func (s *Service) Keys(ctx context.Context, id string) (auth.DeviceKeys, error) {
	s.keysMu.RLock()
	k, ok := s.keys[id]
	gen := s.keysGen
	s.keysMu.RUnlock()
	if ok {
		return k, nil
	}
	deviceID, moduleID := herd.SplitIdentity(id)
	d, found, err := s.keyReads.Load(ctx, deviceID)
	if err != nil {
		return auth.DeviceKeys{}, err
	}
	if !found {
		return auth.DeviceKeys{}, herd.Errorf(herd.ErrDeviceNotFound, "device %q does not exist", deviceID)
	}
	a := d.Authentication
	if moduleID != "" {
		// A module connects with its own credentials, while its device
		// is enabled.
		m, err := s.store.Module(ctx, deviceID, moduleID)
		if err != nil {
			return auth.DeviceKeys{}, err
		}
		a = m.Authentication
	}
	k = auth.DeviceKeys{
		PrimaryKey:   a.SymmetricKey.PrimaryKey,
		SecondaryKey: a.SymmetricKey.SecondaryKey,
		Enabled:      d.Status == herd.DeviceEnabled,
		Type:         a.Type,
	}
	if t := a.X509Thumbprint; a.Type == herd.AuthSelfSigned {
		k.PrimaryThumbprint, k.SecondaryThumbprint = deref(t.PrimaryThumbprint), deref(t.SecondaryThumbprint)
	}
	s.keysMu.Lock()
	if s.keysGen == gen {
		if len(s.keys) >= maxCachedKeys {
			s.evictKeys()
		}
		s.keys[id] = k
		if moduleID != "" {
			if s.moduleKeys[deviceID] == nil {
				s.moduleKeys[deviceID] = map[string]struct{}{}
			}
			s.moduleKeys[deviceID][id] = struct{}{}
		}
	}
	s.keysMu.Unlock()
	return k, nil
}

// maxCachedKeys bounds the key cache (a few hundred bytes an entry): a
// node keeps the keys of the devices that connect to it, and a fleet that
// moves between the nodes of a cluster would otherwise leave every
// node holding every device's keys. A variable for tests.
var maxCachedKeys = 1 << 18

// evictKeys drops an arbitrary eighth of the cached keys (Go's map order),
// which costs each a store read at its next connect (under keysMu).
func (s *Service) evictKeys() {
	drop := max(len(s.keys)/8, 1)
	for id := range s.keys {
		if drop == 0 {
			break
		}
		drop--
		delete(s.keys, id)
		if deviceID, moduleID := herd.SplitIdentity(id); moduleID != "" {
			delete(s.moduleKeys[deviceID], id)
			if len(s.moduleKeys[deviceID]) == 0 {
				delete(s.moduleKeys, deviceID)
			}
		}
	}
}

// Forget drops the cached keys of a device (and its modules') or of a
// module: another node changed its identity.
func (s *Service) Forget(id string) { s.forget(id) }

// forget drops a device's cached keys after a write to its identity.
func (s *Service) forget(id string) {
	s.keysMu.Lock()
	delete(s.keys, id)
	if deviceID, moduleID := herd.SplitIdentity(id); moduleID != "" {
		delete(s.moduleKeys[deviceID], id)
	} else {
		for m := range s.moduleKeys[id] {
			delete(s.keys, m)
		}
		delete(s.moduleKeys, id)
	}
	s.keysGen++
	s.keysMu.Unlock()
}
