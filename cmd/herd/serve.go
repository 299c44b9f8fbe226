package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd/internal/cluster"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/store"
)

func serveCommand(e *env) *cobra.Command {
	cfg := hub.Default()
	cfg.Version = version()
	var logFormat, logLevel, storeSpec string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub",
		Long: `Run the hub: the Azure-compatible REST API over HTTPS and the device
gateway. Every flag can also be set with a HERD_* environment variable
(--https-addr with HERD_HTTPS_ADDR, and so on); a flag on the command line
wins. A variable set to "" counts only where "" means something:
HERD_MQTT_ADDR="" turns MQTT over TLS off as --mqtt-addr "" does (and
HERD_MQTT_PLAIN_ADDR="" plain MQTT); for every other flag an empty
variable is ignored, as if it were not set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd, e.lookupEnv); err != nil {
				return err
			}
			log, err := newLogger(e, logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg.Log = log
			if cfg.ShutdownGrace <= 0 {
				cfg.ShutdownGrace = -1 // none (0 means the default to the hub)
			}
			if cfg.Store, err = store.Open(cmd.Context(), storeSpec, cfg.DataDir); err != nil {
				return err
			}
			h, err := hub.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			cs, err := h.ConnectionString("iothubowner")
			if err != nil {
				h.Close()
				return err
			}
			where := store.Describe(storeSpec, cfg.DataDir)
			printReady(e, h, cs, where)
			log.Info("hub ready", "https_addr", h.HTTPSAddr().String(), "mqtt_addr", addrString(h.MQTTAddr()),
				"mqtt_plain_addr", addrString(h.MQTTPlainAddr()), "hostname", cfg.Hostname, "store", where)
			err = h.Run(cmd.Context())
			log.Info("hub stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data folder: CA, server certificate and (by default) the database")
	f.StringVar(&storeSpec, "store", "", "where the hub keeps its data: sqlite:PATH, or a postgres://user@host:5432/db URL (default: SQLite in the data folder)")
	f.StringVar(&cfg.Hostname, "hostname", cfg.Hostname, "the hub's host name, as devices and services address it")
	f.StringVar(&cfg.HTTPSAddr, "https-addr", cfg.HTTPSAddr, "address of the REST API (the official Azure service SDKs only reach port 443)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "server certificate (PEM) to use instead of the generated one")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "key (PEM) of --tls-cert")
	f.StringVar(&cfg.MQTTAddr, "mqtt-addr", cfg.MQTTAddr, `address of MQTT over TLS for devices ("" turns it off)`)
	f.StringVar(&cfg.MQTTPlainAddr, "mqtt-plain-addr", "", "address of plain (unencrypted) MQTT for load tests and trusted networks; off unless set")
	f.IntVar(&cfg.MaxConnections, "max-connections", cfg.MaxConnections, "device connections (MQTT over TCP, TLS and WebSocket) open at once at most, more are refused "+
		"with CONNACK 3; 0 means no bound. The default is the open-file limit less a tenth (at least 200, at most 2000)")
	f.BoolVar(&cfg.MetricsPublic, "metrics-public", false, "serve /metrics without authorization")
	f.DurationVar(&cfg.JobRetention, "job-retention", job.DefaultRetention, "how long finished jobs are kept before they are purged")
	f.IntVar(&cfg.JobMaxInFlight, "job-max-in-flight", job.DefaultMaxInFlight, "device operations in flight across all jobs at most (shared fairly between jobs)")
	f.IntVar(&cfg.JobTwinBatch, "job-twin-batch", 0, "twins a twin-update job patches per transaction (0: 2000 on SQLite, 5000 on PostgreSQL)")
	f.StringVar(&cfg.NodeID, "node-id", "", "this node's name among the nodes of its store (herd cluster status); default: one kept in the data folder's node-id file")
	f.DurationVar(&cfg.NodeLease, "node-lease", cluster.DefaultLease, "how long a renewal of this node's lease holds (renewed every third of it): a node gone without a stop is "+
		"known lost after it, its devices are then marked Disconnected and its jobs taken over")
	f.StringVar(&cfg.NATS, "nats", "", "cluster mode: the NATS server (nats://host:4222) through which several nodes on one PostgreSQL --store reach each other's devices (docs/cluster.md)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", hub.DefaultShutdownGrace, "on SIGTERM or Ctrl-C, how long the work in flight (REST requests, jobs' method calls, other nodes' calls to this node's devices) "+
		"may take to finish before the devices are closed; 0: none")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	allowEmpty(f, "mqtt-addr", "mqtt-plain-addr")
	return cmd
}

func newLogger(e *env, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

// printReady writes the ready banner in one write, so that a reader that
// sees "Herd is ready." also sees the rest (a test or a script reading
// stdout as the hub starts).
func printReady(e *env, h *hub.Hub, cs, where string) {
	w := &strings.Builder{}
	defer func() { _, _ = io.WriteString(e.stdout, w.String()) }()
	fmt.Fprintf(w, "Herd is ready.\n\n")
	fmt.Fprintf(w, "  REST API     https://%s (listening on %s)\n", hostPort(h), h.HTTPSAddr())
	fmt.Fprintf(w, "  Dashboard    %s (sign in with a connection string)\n", h.DashboardURL())
	if a := h.MQTTAddr(); a != nil {
		fmt.Fprintf(w, "  MQTT (TLS)   %s (devices: GatewayHostName=%s)\n", a, mqttHostPort(h, a))
	}
	fmt.Fprintf(w, "  MQTT/WS      wss://%s/$iothub/websocket\n", hostPort(h))
	if a := h.MQTTPlainAddr(); a != nil {
		fmt.Fprintf(w, "  MQTT (plain) %s — unencrypted, for trusted networks only\n", a)
	}
	fmt.Fprintf(w, "  Store        %s\n", where)
	fmt.Fprintf(w, "  Node         %s\n", h.Cluster.NodeID())
	if n := h.NATS(); n != "" {
		fmt.Fprintf(w, "  Cluster      NATS %s\n", n)
	}
	if ca := h.CAFile(); ca != "" {
		fmt.Fprintf(w, "  CA           %s\n", ca)
		fmt.Fprintf(w, "               trust it with: export NODE_EXTRA_CA_CERTS=%s\n", ca)
	}
	fmt.Fprintf(w, "\n  Service connection string (iothubowner):\n    %s\n\n", cs)
}

// mqttHostPort is how devices address the MQTT listener at a.
func mqttHostPort(h *hub.Hub, a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return net.JoinHostPort(h.Hostname(), port)
}

// hostPort is how clients address the REST API: the host name, with the
// port unless it is 443.
func hostPort(h *hub.Hub) string {
	_, port, _ := net.SplitHostPort(h.HTTPSAddr().String())
	if port == "443" {
		return h.Hostname()
	}
	return net.JoinHostPort(h.Hostname(), port)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
