// Package hub assembles a whole Herd hub from its parts: it opens the
// store, builds the domain services, binds the listeners and runs them
// until its context ends. `herd serve`, `herd demo` and the in-process test
// hub (internal/hubtest) all start hubs through it, so they are wired the
// same way.
package hub

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/certauth"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/cluster"
	"github.com/herd-iot/herd/internal/config"
	"github.com/herd-iot/herd/internal/events"
	"github.com/herd-iot/herd/internal/gateway"
	"github.com/herd-iot/herd/internal/httpapi"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/mesh"
	"github.com/herd-iot/herd/internal/method"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
	"github.com/herd-iot/herd/internal/ui"
	"github.com/herd-iot/herd/sas"
)

// Config configures a hub. Default returns the defaults; Validate checks.
type Config struct {
	// Store is where the hub keeps everything (required); the hub closes
	// it.
	Store Store
	// DataDir holds the CA and the server certificate (and, by default,
	// the SQLite database that cmd/herd opens as the Store).
	DataDir string
	// Hostname is the hub's host name: HostName in connection strings,
	// the sr of tokens, and a SAN of the generated certificate.
	Hostname string
	// HTTPSAddr is where the REST API (and MQTT over WebSocket) listens.
	HTTPSAddr string
	// TLSCert and TLSKey name the user's own certificate and key files;
	// empty means the generated local CA's.
	TLSCert, TLSKey string
	// MetricsPublic serves /metrics without authorization.
	MetricsPublic bool
	// HTTPBodyTimeout bounds how long a REST request's body may take to
	// arrive after its headers (0: httpapi.DefaultBodyTimeout).
	HTTPBodyTimeout time.Duration
	// JobRetention is how long finished jobs are kept (0: 30 days).
	JobRetention time.Duration
	// JobMaxInFlight caps the device operations in flight across all
	// jobs (0: job.DefaultMaxInFlight).
	JobMaxInFlight int
	// JobTwinBatch is how many twins one twin-job transaction patches
	// (0: the store's choice, job.TwinBatching, else job.DefaultTwinBatch).
	JobTwinBatch int
	// MaxConnections bounds the device sockets (TCP, TLS, WebSocket) open
	// at once; more are refused with CONNACK 3 (0: no bound). Default
	// derives it from the open-file limit (DefaultMaxConnections).
	MaxConnections int
	// MQTTAddr is where devices connect with MQTT over TLS ("" = off).
	MQTTAddr string
	// MQTTPlainAddr is an optional plain-TCP MQTT listener (load tests,
	// trusted networks); "" = off.
	MQTTPlainAddr string
	Log           *slog.Logger
	// Now is the hub's clock.
	Now func() time.Time
	// Clock schedules expiries (tokens on live connections, method
	// timeouts); nil means real timers on Now.
	Clock clock.Clock
	// NodeID names this hub among the nodes of its store (GET /cluster);
	// "" means the one kept in DataDir (cluster.LocalNodeID).
	NodeID string
	// NodeLease is how long a renewal of the node's lease holds (0:
	// cluster.DefaultLease).
	NodeLease time.Duration
	// ShutdownGrace is how long a hub that stops (Run's context ends: a
	// SIGTERM) lets the work in flight finish before it closes its
	// devices: REST requests, method calls of jobs and, in a cluster,
	// the other nodes' calls to its devices (0: DefaultShutdownGrace;
	// negative: none).
	ShutdownGrace time.Duration
	// Version is the herd version the node reports.
	Version string
	// NATS, if not "", is the NATS server of a cluster (nats://host:4222):
	// several nodes serve one PostgreSQL store and reach each other's
	// devices through it (internal/mesh). "" serves the store alone.
	NATS string
}

// DefaultShutdownGrace is how long a stopping hub lets the work in flight
// finish, below the 30 s after which service managers (systemd,
// Kubernetes) kill a process that does not exit.
const DefaultShutdownGrace = 10 * time.Second

// grace is the shutdown grace the configuration says.
func (c Config) grace() time.Duration {
	switch {
	case c.ShutdownGrace == 0:
		return DefaultShutdownGrace
	case c.ShutdownGrace < 0:
		return 0
	}
	return c.ShutdownGrace
}

// Default returns the configuration `herd serve` starts from.
func Default() Config {
	return Config{
		DataDir:   "herd-data",
		Hostname:  "localhost",
		HTTPSAddr: ":443",
		MQTTAddr:  ":8883",
		Log:       slog.Default(),
		Now:       time.Now,

		MaxConnections: DefaultMaxConnections(),
	}
}

// Validate checks the configuration; its messages name the field.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("store: no store was given")
	case c.DataDir == "":
		return errors.New("data: the data folder must not be empty")
	case c.Hostname == "":
		return errors.New("hostname: the host name must not be empty")
	case c.HTTPSAddr == "":
		return errors.New("https-addr: the HTTPS address must not be empty")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("tls-cert, tls-key: give both or neither")
	case c.MaxConnections < 0:
		return errors.New("max-connections: must not be negative (0 means no bound)")
	case c.Log == nil || c.Now == nil:
		return errors.New("log and clock must be set")
	case c.NodeID != "":
		if err := cluster.ValidNodeID(c.NodeID); err != nil {
			return fmt.Errorf("node-id: %s", herd.ErrorMessage(err))
		}
	}
	if _, shared := c.Store.(ClusterStore); c.NATS != "" && !shared {
		return errors.New("nats: cluster mode needs a store that several nodes share (--store postgres://…), not a SQLite file")
	}
	return nil
}

// Hub is a running hub's parts.
type Hub struct {
	cfg      Config
	Store    Store
	Auth     *auth.Service
	Registry *registry.Service
	Twins    *twin.Service
	Jobs     *job.Service
	Metrics  *prometheus.Registry
	Bus      *bus.Bus
	Methods  *method.Service
	Gateway  *gateway.Server
	Events   *events.Stream
	// Certificates holds the CA certificates and authenticates X.509
	// devices.
	Certificates *certauth.Service
	// Configurations are the automatic device configurations, applied
	// as devices change.
	Configurations *config.Service
	// Cluster is this node's lease among the nodes of its store.
	Cluster *cluster.Service
	// mesh reaches the other nodes (nil: one node).
	mesh *mesh.Mesh
	// leading says this node leads its cluster: it applies the
	// configurations (runJobs, lead).
	leading atomic.Bool

	tlsConfig *tls.Config
	serving   atomic.Bool // Run is serving (GET /readyz)
	https     net.Listener
	mqtt      net.Listener // TLS; nil when off
	mqttPlain net.Listener // nil when off
	api       *httpapi.Server
	ui        *ui.Server // the dashboard at /ui/
}

// New opens the store, builds the services and binds the listeners. Nothing
// is served until Run.
func New(ctx context.Context, cfg Config) (_ *Hub, err error) {
	if err := cfg.Validate(); err != nil {
		if cfg.Store != nil {
			cfg.Store.Close()
		}
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		cfg.Store.Close()
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	if lim := openFileLimit(); lim > 0 && (cfg.MaxConnections == 0 || cfg.MaxConnections > lim) {
		cfg.Log.Warn("max-connections is not below the open-file limit: a flood of device sockets can exhaust file descriptors",
			"max_connections", cfg.MaxConnections, "open_file_limit", lim, "suggested", MaxConnectionsFor(lim))
	}
	if cfg.NodeID == "" {
		id, err := cluster.LocalNodeID(cfg.DataDir)
		if err != nil {
			cfg.Store.Close()
			return nil, err
		}
		cfg.NodeID = id
	}
	h := &Hub{cfg: cfg, Store: cfg.Store}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if cfg.NATS != "" {
		if err := h.Store.(ClusterStore).Join(ctx, h.cfg.NodeID); err != nil {
			return nil, err
		}
	} else if c, ok := h.Store.(Claimer); ok {
		if err := c.Claim(ctx); err != nil {
			return nil, err
		}
	}
	if err := h.Store.SetSetting(ctx, "hostname", cfg.Hostname); err != nil {
		return nil, err
	}
	if h.Auth, err = auth.NewService(ctx, h.Store, cfg.Hostname, cfg.Now); err != nil {
		return nil, err
	}
	if h.tlsConfig, err = tlsConfig(cfg); err != nil {
		return nil, err
	}
	if err := h.wire(cfg); err != nil {
		return nil, err
	}
	if h.https, err = listen(cfg.HTTPSAddr, "https-addr", &net.ListenConfig{}); err != nil {
		return nil, err
	}
	if cfg.MQTTAddr != "" {
		if h.mqtt, err = listen(cfg.MQTTAddr, "mqtt-addr", &deviceListen); err != nil {
			return nil, err
		}
		h.mqtt = tls.NewListener(h.mqtt, h.tlsConfig)
	}
	if cfg.MQTTPlainAddr != "" {
		if h.mqttPlain, err = listen(cfg.MQTTPlainAddr, "mqtt-plain-addr", &deviceListen); err != nil {
			return nil, err
		}
	}
	// Where the listeners are, for the CLI's tools (herd sim, herd cluster
	// status) on this data: in the store, and in the data folder, which is
	// this node's alone (the store's settings are the last node's to start).
	listeners := map[string]string{}
	for name, a := range map[string]net.Addr{"https_addr": h.https.Addr(), "mqtt_addr": h.MQTTAddr(), "mqtt_plain_addr": h.MQTTPlainAddr()} {
		listeners[name] = addrString(a)
		if err := h.Store.SetSetting(ctx, name, listeners[name]); err != nil {
			return nil, err
		}
	}
	if err := writeListeners(cfg.DataDir, listeners); err != nil {
		// The CLI then finds the hub through the store's settings, as
		// before this record existed.
		cfg.Log.Warn("could not record the listeners in the data folder", "err", err)
	}
	// Before anything is served: Start also marks Disconnected what a
	// crash of this node left Connected.
	if err := h.Cluster.Start(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// ListenersFile, in a data folder, records where the hub that uses it
// listens (JSON: https_addr, mqtt_addr, mqtt_plain_addr; "" for a
// listener that is off), rewritten at every start.
const ListenersFile = "listeners.json"

func writeListeners(dir string, l map[string]string) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(dir, ListenersFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("record the listeners: %w", err)
	}
	return os.Rename(tmp, path)
}

// Listeners reads what a hub recorded in its data folder about where it
// listens (nil if no hub has started there).
func Listeners(dir string) map[string]string {
	b, err := os.ReadFile(filepath.Join(dir, ListenersFile))
	if err != nil {
		return nil
	}
	var l map[string]string
	if json.Unmarshal(b, &l) != nil {
		return nil
	}
	return l
}

// wire builds the domain services and connects their seams: twin writes
// notify the bus, registry changes recheck live connections, the gateway
// feeds methods, twins and the event stream.
func (h *Hub) wire(cfg Config) error {
	clk := cfg.Clock
	if clk == nil {
		clk = clock.FromNow(cfg.Now)
	}
	nodeID := cfg.NodeID // New set it
	if cfg.NATS != "" {
		var err error
		if h.mesh, err = mesh.Connect(mesh.Config{URL: cfg.NATS, NodeID: nodeID, Presence: h.Store, Log: cfg.Log}); err != nil {
			return err
		}
	}
	h.Bus = bus.New()
	h.Events = events.New()
	var gw *gateway.Server // set below, before anything is served
	h.Registry = registry.NewService(h.Store, nodeID, cfg.Now, func(id string) {
		if gw != nil {
			gw.DeviceChanged(id)
		}
		if h.mesh != nil {
			h.mesh.DeviceChanged(id)
		}
	}, cfg.Log)
	h.Twins = twin.NewService(h.Store, cfg.Now, h.desired)
	h.Certificates = certauth.NewService(h.Store, cfg.Now, func() {
		if gw != nil {
			gw.CertificatesChanged()
		}
	})
	h.Metrics = prometheus.NewRegistry()
	h.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h.Methods = method.NewService(h.Bus, func(ctx context.Context, id string) error {
		_, err := h.Registry.Keys(ctx, id)
		return err
	}, clk, h.Metrics)
	if h.mesh != nil {
		h.Methods.UseRemote(h.mesh)
		h.Bus.OnOnline(h.mesh.Online)
		h.Events.OnSubscribe(h.mesh.Monitoring)
	}
	var pres gateway.Presence
	if cs, ok := h.Store.(ClusterStore); ok && h.mesh != nil {
		pres = newPresence(cs, nodeID, cfg.Now)
	}
	gw = gateway.New(gateway.Config{
		Host: cfg.Hostname, Auth: h.Auth, Registry: h.Registry, Twins: h.Twins,
		Methods: h.Methods, Bus: h.Bus, Sessions: h.Store, Events: h.event,
		Clock: clk, Log: cfg.Log, Metrics: h.Metrics, MaxConnections: cfg.MaxConnections,
		Certificates: h.Certificates, Attached: h.attached, Presence: pres,
	})
	h.Gateway = gw
	h.Registry.ReadKeysWith(func(ctx context.Context, ids []string) (map[string]*herd.Device, error) {
		gen := gw.SessionsGeneration()
		devs, subs, err := h.Store.DevicesAndSessions(ctx, ids)
		if err != nil {
			return nil, err
		}
		found := make([]string, 0, len(devs))
		for id := range devs {
			found = append(found, id)
		}
		gw.LearnSessions(gen, found, subs)
		return devs, nil
	})
	queries := query.NewService(h.Store)
	h.Configurations = config.New(h.Store, h.Twins, queries, cfg.Now, cfg.Log)
	h.Jobs = newJobs(h, cfg, clk, nodeID)
	// Configurations follow the service-side twin writes; continuous jobs
	// every change of a device: its registry entry (created, enabled), its
	// tags, desired and reported properties. In a cluster the node that
	// runs them hears of the other nodes' changes (changed).
	h.Twins.OnChange(func(id string) { h.changed(id, true, false) })
	h.Registry.OnTwinChange(func(id string) { h.changed(id, true, true) })
	h.Twins.OnWrite(func(id string) { h.changed(id, false, true) })
	if h.mesh != nil {
		h.Configurations.OnAnnounce(h.mesh.ConfigurationsChanged)
	}
	h.api = httpapi.New(httpapi.Config{
		Auth: h.Auth, Registry: h.Registry, Twins: h.Twins, Jobs: h.Jobs, Query: queries,
		Connected: h.connectedDevices,
		Metrics:   h.Metrics, MetricsPublic: cfg.MetricsPublic,
		BodyTimeout: cfg.HTTPBodyTimeout,
		Ready:       h.ready,
		Log:         cfg.Log, Now: cfg.Now,
	})
	h.api.HandleMethods(h.Methods)
	h.api.HandleEvents(h.Events)
	h.api.HandleCertificates(h.Certificates)
	h.api.HandleConfigurations(h.Configurations)
	var err error
	if h.Cluster, err = cluster.New(cluster.Config{Store: h.Store, NodeID: nodeID, Clock: clk, Lease: cfg.NodeLease,
		Log: cfg.Log, Info: h.nodeInfo, Jobs: h.clusterJobs, Connected: h.Bus.Attached, Reconnect: func(id string, at time.Time) {
			h.Registry.RecordConnection(id, herd.Connected, at, gw.ConnectionEpoch(id))
		}}); err != nil {
		return err
	}
	h.api.HandleCluster(h.Cluster)
	if h.ui, err = h.newDashboard(cfg); err != nil {
		return err
	}
	if h.mesh != nil {
		return h.mesh.Serve(mesh.Handlers{
			Invoke: func(ctx context.Context, id string, req herd.MethodRequest) (*herd.MethodResult, error) {
				return h.Methods.Invoke(ctx, id, req, method.Here())
			},
			DeviceChanged: func(id string) {
				h.Registry.Forget(id)
				gw.DeviceChanged(id)
			},
			Changed: func(ids []string) {
				leading := h.leading.Load()
				for _, id := range ids {
					if leading {
						h.Configurations.Changed(id)
					}
					h.Jobs.DeviceChanged(id)
				}
			},
			Event: h.Events.Publish,
			ConfigurationsChanged: func() {
				if h.leading.Load() {
					h.Configurations.Reload(context.Background())
				}
			},
			Desired:     h.desiredFromNode,
			Online:      h.Methods.CameOnline,
			Attached:    gw.TakenOver,
			JobsChanged: func() { h.Jobs.Refresh(context.Background()) },
			JobProgress: func(note []byte) {
				var ev job.ProgressEvent
				if err := json.Unmarshal(note, &ev); err != nil {
					cfg.Log.Warn("cluster: a job progress note that does not parse", "err", err)
					return
				}
				h.Jobs.ApplyProgress(ev)
			},
		})
	}
	return nil
}

// changed hands a device's change to the configurations (config) and the
// continuous jobs (jobs) where they run: the configurations here when the
// hub is alone or this node leads the cluster, the continuous jobs here
// (a node follows those it holds the lease of); in a cluster, batched,
// to the other nodes too (the leader looks at both, every node at its
// continuous jobs).
func (h *Hub) changed(id string, config, jobs bool) {
	if h.mesh != nil {
		h.mesh.Changed(id)
	}
	if config && (h.mesh == nil || h.leading.Load()) {
		h.Configurations.Changed(id)
	}
	if jobs {
		h.Jobs.DeviceChanged(id)
	}
}

// event hands a device-to-cloud message to the monitors: here, and in a
// cluster to the other nodes' (when some have monitors).
func (h *Hub) event(e *herd.Event) {
	h.Events.Publish(e)
	if h.mesh != nil {
		h.mesh.Event(e)
	}
}

// attached tells the other nodes of a cluster that a device connected
// here.
func (h *Hub) attached(id string, at time.Time, epoch int64) {
	if h.mesh != nil {
		h.mesh.Attached(id, at, epoch)
	}
}

// connectedDevices is how many devices are connected to the hub: to this
// node, and in a cluster to the others too (as their last lease renewals
// said).
func (h *Hub) connectedDevices() int64 {
	n := h.Bus.Connected()
	if h.mesh == nil {
		return n
	}
	st, err := h.Cluster.Status(context.Background())
	if err != nil {
		h.cfg.Log.Warn("cluster: could not read the other nodes' device counts", "err", err)
		return n
	}
	for _, node := range st.Nodes {
		if node.NodeID != st.NodeID && node.State == herd.NodeAlive {
			n += node.ConnectedDevices
		}
	}
	return n
}

// clusterJobs returns the jobs that have not ended, each with the node
// that runs it (GET /cluster): in a cluster the holder of its lease, on a
// hub alone this node while its engine runs the job.
func (h *Hub) clusterJobs(ctx context.Context, now time.Time) ([]*herd.ClusterJob, error) {
	recs, err := h.Store.ActiveJobs(ctx)
	if err != nil {
		return nil, err
	}
	here := map[string]bool{}
	for _, id := range h.Jobs.RunningIDs() {
		here[id] = true
	}
	out := make([]*herd.ClusterJob, 0, len(recs))
	for _, r := range recs {
		j := &herd.ClusterJob{JobID: r.JobID, Type: r.Type, Status: r.Status}
		switch {
		case h.mesh != nil && r.Lease.HeldAt(now):
			j.NodeID, j.LeaseUntil, j.LeaseEpoch = r.Lease.Node, herd.NewTime(r.Lease.Until), r.Lease.Epoch
		case h.mesh == nil && here[r.JobID]:
			j.NodeID = h.Cluster.NodeID()
		}
		out = append(out, j)
	}
	return out, nil
}

// NATS is the NATS server of the node's cluster, "" for a hub alone.
func (h *Hub) NATS() string { return h.cfg.NATS }

// Leading says whether this hub applies the configurations now: a hub
// alone always does while it runs; in a cluster, the one node that holds
// the cluster's lock.
func (h *Hub) Leading() bool { return h.mesh == nil || h.leading.Load() }

// desired delivers a desired-properties change to the device: here if it
// is connected here, else through the node it is connected to: the node
// the writer saw holding it, or every node when the writer did not look
// (or saw this node, which the device has left since). A device the
// writer saw connected nowhere is not told: a device that connects reads
// its twin, as Azure advises.
func (h *Hub) desired(id string, where twin.Where, version int64, body []byte) {
	switch {
	case h.mesh == nil || h.Bus.Lookup(id) != nil:
		h.Bus.Desired(id, version, body)
	case !where.Known || where.Node == h.cfg.NodeID:
		h.mesh.Desired(id, version, body)
	case where.Node != "":
		h.mesh.DesiredTo(where.Node, id, version, body)
	}
}

// desiredFromNode delivers a desired change another node sent: to the
// device if it is connected here. One sent to this node alone, for a
// device that has left it since, goes to every node.
func (h *Hub) desiredFromNode(id string, version int64, body []byte, routed bool) {
	if routed && h.Bus.Lookup(id) == nil {
		h.mesh.Desired(id, version, body)
		return
	}
	h.Bus.Desired(id, version, body)
}

// nodeInfo is what this node says of itself at each renewal of its lease.
func (h *Hub) nodeInfo() cluster.Info {
	mqtt := h.MQTTAddr()
	if mqtt == nil {
		mqtt = h.MQTTPlainAddr()
	}
	return cluster.Info{RESTAddress: addrString(h.HTTPSAddr()), MQTTAddress: addrString(mqtt),
		ConnectedDevices: h.Bus.Connected(), Version: h.cfg.Version, Leader: h.Leading(), RunningJobs: h.Jobs.Running()}
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	var (
		cert tls.Certificate
		err  error
	)
	if cfg.TLSCert != "" {
		cert, err = tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	} else {
		cert, err = certs.Local(cfg.DataDir, cfg.Hostname)
	}
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	// A client certificate is asked for but not required, and not checked
	// here: X.509 devices are authenticated at CONNECT against the registry
	// (internal/certauth); everyone else sends none, as before.
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequestClientCert}, nil
}

// deviceListen is how the MQTT listeners bind: their sockets get no TCP
// keep-alive. MQTT has its own: the gateway closes a connection silent
// for 1.5 times its keep-alive, or for 1,767 s when it asked for none, and
// turns on TCP's only for those (gateway.tcpKeepAlive). Go's default, a
// probe after 15 s of silence, would send each idle device a probe every
// 15 s (6,700 a second for 100,000 devices) and cost each connect the
// system calls that set it.
var deviceListen = net.ListenConfig{KeepAlive: -1}

// listen binds addr as lc says and explains the usual failures.
func listen(addr, flag string, lc *net.ListenConfig) (net.Listener, error) {
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err == nil {
		return l, nil
	}
	switch {
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("--%s %s: permission denied: ports below 1024 need root, "+
			"`sudo setcap cap_net_bind_service=+ep $(which herd)` or `sudo sysctl net.ipv4.ip_unprivileged_port_start=443`; "+
			"or choose another port (the official Azure service SDKs only reach port 443): %w", flag, addr, err)
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("--%s %s: the address is already in use: stop the other server or choose another port "+
			"(the official Azure service SDKs only reach port 443): %w", flag, addr, err)
	}
	return nil, fmt.Errorf("--%s %s: %w", flag, addr, err)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Hostname is the hub's host name.
func (h *Hub) Hostname() string { return h.cfg.Hostname }

// HTTPSAddr is the bound address of the REST API.
func (h *Hub) HTTPSAddr() net.Addr { return h.https.Addr() }

// MQTTAddr is the bound address of MQTT over TLS, or nil when off.
func (h *Hub) MQTTAddr() net.Addr {
	if h.mqtt == nil {
		return nil
	}
	return h.mqtt.Addr()
}

// MQTTPlainAddr is the bound address of plain MQTT, or nil when off.
func (h *Hub) MQTTPlainAddr() net.Addr {
	if h.mqttPlain == nil {
		return nil
	}
	return h.mqttPlain.Addr()
}

// CAFile is the path of the generated CA certificate clients should trust
// ("" when the user gave their own certificate).
func (h *Hub) CAFile() string {
	if h.cfg.TLSCert != "" {
		return ""
	}
	return filepath.Join(h.cfg.DataDir, certs.CAFile)
}

// ConnectionString returns a policy's service connection string.
func (h *Hub) ConnectionString(policy string) (string, error) {
	return h.Auth.ConnectionString(policy)
}

// DeviceConnectionString returns a device's connection string with its
// primary key, or with x509=true for a device that uses a certificate.
func (h *Hub) DeviceConnectionString(ctx context.Context, deviceID string) (string, error) {
	d, err := h.Registry.Get(ctx, deviceID)
	if err != nil {
		return "", err
	}
	cs := sas.ConnectionString{HostName: h.cfg.Hostname, DeviceID: d.DeviceID,
		SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
	if t := d.Authentication.Type; t == herd.AuthSelfSigned || t == herd.AuthCertificateAuthority {
		cs.SharedAccessKey, cs.X509 = "", true // the device brings its certificate
	}
	return cs.String(), nil
}

// ready is GET /readyz: the hub is serving (Run has started its
// listeners and is not shutting down) and the store answers.
func (h *Hub) ready(ctx context.Context) error {
	if !h.serving.Load() {
		return errors.New("the hub is starting or shutting down")
	}
	return h.Store.Ping(ctx)
}

// Run serves until ctx ends, then drains and shuts down. The drain, within
// Config.ShutdownGrace: the hub stops taking connections (listeners close,
// GET /readyz fails) and starting jobs' calls; the REST requests and the
// method calls in flight finish (in a cluster, also those other nodes
// routed here, while new ones are refused so that their callers look for
// the device elsewhere); the job engine hands over (in a cluster, another
// node takes the jobs). Only then are the devices closed, so that what was
// in flight is answered; the pending writes are flushed last.
func (h *Hub) Run(ctx context.Context) error {
	defer h.Close()
	g, ctx := errgroup.WithContext(ctx)
	h.serving.Store(true)
	context.AfterFunc(ctx, func() { h.serving.Store(false) })
	mux := http.NewServeMux()
	mux.Handle(gateway.WebSocketPath, h.Gateway.WebSocketHandler())
	h.withDashboard(mux, h.api.Handler())
	srv := &http.Server{
		Handler: mux,
		// A copy of its own: net/http adds its protocols (h2) to the
		// server's TLS config when it starts serving, which would race with
		// the MQTT listener's handshakes on a shared one.
		TLSConfig:         h.tlsConfig.Clone(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(h.cfg.Log.Handler(), slog.LevelDebug),
	}
	g.Go(func() error {
		if err := srv.ServeTLS(h.https, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTPS: %w", err)
		}
		return nil
	})
	for _, l := range []net.Listener{h.mqtt, h.mqttPlain} {
		if l != nil {
			g.Go(func() error { return h.Gateway.Serve(l) })
		}
	}
	// The devices stay connected through the drain; the registry writes
	// its last batch after the gateway has closed every connection, so that
	// the disconnects are recorded.
	devices, closeDevices := context.WithCancel(context.WithoutCancel(ctx))
	defer closeDevices()
	regCtx, regDone := context.WithCancel(context.WithoutCancel(ctx))
	g.Go(func() error {
		defer regDone()
		return h.Gateway.Run(devices)
	})
	jobsDone := make(chan struct{})
	g.Go(func() error {
		defer close(jobsDone)
		return h.runJobs(ctx)
	})
	g.Go(func() error {
		<-ctx.Done()
		defer closeDevices()
		return h.drain(ctx, srv, jobsDone)
	})
	g.Go(func() error { return h.Registry.Run(regCtx) })
	if h.mesh != nil {
		// The other nodes send this node their devices' messages while it
		// has monitors.
		g.Go(func() error {
			t := time.NewTicker(mesh.MonitorEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					if h.Events.Subscribers() > 0 {
						h.mesh.Monitoring()
					}
				}
			}
		})
	}
	if h.mesh == nil {
		g.Go(func() error { return h.Configurations.Run(ctx) }) // in a cluster, runJobs runs it
	}
	// The node's lease is renewed while it has devices, and ended
	// (stopped) once they are disconnected.
	g.Go(func() error {
		h.Cluster.Run(devices)
		<-regCtx.Done()
		stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := h.Cluster.Stop(stop); err != nil {
			h.cfg.Log.Warn("could not record this node's stop", "err", err)
		}
		return nil
	})
	return g.Wait()
}

// drain is the first part of a shutdown (see Run), once ctx has ended; it
// returns when the devices may be closed.
func (h *Hub) drain(ctx context.Context, srv *http.Server, jobsDone <-chan struct{}) error {
	began := time.Now()
	h.Gateway.StopAccepting()
	h.Events.Close() // monitors' streams end, so that the REST server can shut down
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.grace())
	defer cancel()
	rest := make(chan error, 1)
	go func() {
		// The HTTPS listener closes at once; requests in flight finish.
		if err := srv.Shutdown(grace); err != nil {
			rest <- srv.Close()
			return
		}
		rest <- nil
	}()
	<-jobsDone // bounded by the grace too (job.Config.Grace)
	if h.mesh != nil {
		if err := h.mesh.Drain(grace); err != nil {
			h.cfg.Log.Warn("cluster: method calls of other nodes still in flight at the end of the shutdown grace are cut off", "node", h.Cluster.NodeID())
		}
	}
	err := <-rest
	h.cfg.Log.Info("drained; closing the device connections", "devices", h.Gateway.Connected(),
		"drain_ms", time.Since(began).Milliseconds())
	return err
}

// runJobs runs the job engine and the configurations' applier. A hub
// alone runs the engine here (the applier runs beside it, in Run). In a
// cluster every node runs the engine, each job on the node that holds its
// lease (job.Leases), and the one node that holds the cluster's lock
// applies the configurations; another node takes the lock over within a
// few seconds when that node is lost. A node whose database session fails
// while it holds the lock (PostgreSQL restarted, the network cut) stops
// applying them, joins the cluster again on a new session once the
// database answers, and competes for the lock again.
func (h *Hub) runJobs(ctx context.Context) error {
	if h.mesh == nil {
		return h.Jobs.Run(ctx)
	}
	engine := make(chan error, 1)
	go func() { engine <- h.Jobs.Run(ctx) }()
	h.competeToLead(ctx)
	return <-engine
}

// competeToLead leads the cluster (lead) whenever this node holds the
// cluster's lock, until ctx ends.
func (h *Hub) competeToLead(ctx context.Context) {
	every := h.cfg.NodeLease / 3
	if every <= 0 {
		every = cluster.DefaultLease / 3
	}
	cs := h.Store.(ClusterStore)
	for {
		lost, err := cs.Lead(ctx, every)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.cfg.Log.Warn("cluster: cannot compete for the cluster's lock; trying again", "node", h.Cluster.NodeID(), "err", err)
			if !h.rejoin(ctx, every) {
				return
			}
			continue
		}
		if h.lead(ctx, lost); ctx.Err() != nil {
			return
		}
		h.cfg.Log.Error("cluster: this node lost the cluster's lock (its database session failed); it stopped applying the configurations and competes for the lock again",
			"node", h.Cluster.NodeID())
		if !h.rejoin(ctx, every) {
			return
		}
	}
}

// lead applies the configurations until ctx ends (the lock is then
// handed over) or lost is closed.
func (h *Hub) lead(ctx context.Context, lost <-chan struct{}) {
	h.cfg.Log.Info("cluster: this node leads the cluster: it applies the configurations", "node", h.Cluster.NodeID())
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h.leading.Store(true)
	defer h.leading.Store(false)
	go func() {
		select {
		case <-lost:
			cancel()
		case <-lctx.Done():
		}
	}()
	if err := h.Configurations.Run(lctx); err != nil && ctx.Err() == nil {
		h.cfg.Log.Warn("cluster: the configurations' applier stopped on an error", "err", err)
	}
	if ctx.Err() == nil {
		return // lost: the lock went with the session
	}
	// Handed over at once, not when the store closes: another node leads
	// while this one closes its devices.
	release, cancelRelease := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancelRelease()
	if uerr := h.Store.(ClusterStore).Unlead(release); uerr != nil {
		h.cfg.Log.Warn("cluster: could not hand the cluster's lock over (another node takes it once this one's database session ends)", "err", uerr)
	}
}

// rejoin joins the cluster again on a new database session, trying every
// interval until the database answers; false if ctx ended first.
func (h *Hub) rejoin(ctx context.Context, every time.Duration) bool {
	cs := h.Store.(ClusterStore)
	for {
		err := cs.Join(ctx, h.Cluster.NodeID())
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		h.cfg.Log.Warn("cluster: cannot join the cluster's database again; trying again", "node", h.Cluster.NodeID(), "err", err)
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// Close releases the hub's resources. Run calls it; call it yourself only
// for a hub that never ran.
func (h *Hub) Close() {
	for _, l := range []net.Listener{h.https, h.mqtt, h.mqttPlain} {
		if l != nil {
			l.Close()
		}
	}
	if h.mesh != nil {
		h.mesh.Close()
		h.mesh = nil
	}
	if h.Store != nil {
		h.Store.Close()
		h.Store = nil
	}
}
