package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/gateway"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/sim"
)

// simFlags are herd sim's own flags.
type simFlags struct {
	devices       int
	prefix        string
	create        bool
	tags          string
	transport     string
	address       string
	connectRate   float64
	concurrency   int
	latency       time.Duration
	failureRate   float64
	dropRate      float64
	telemetry     time.Duration
	reportDesired bool
	statusEvery   time.Duration
}

func simCommand(e *env) *cobra.Command {
	var cf clientFlags
	var sf simFlags
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Connect a fleet of simulated devices to a hub (Herd or any hub speaking Azure IoT Hub's MQTT dialect)",
		Long: `Connect a fleet of simulated devices to a hub. Each device is a real MQTT
connection (TLS, plain TCP or secure WebSocket) that answers every direct
method (lockDoor or any other) with its payload, after --method-latency,
failing a --method-failure-rate share with status 500; applies desired
property changes and reports them back as reported properties; and sends
telemetry every --telemetry-interval if set. A one-line status shows what
the fleet does; stop it with Ctrl-C.

Devices are named --prefix plus an index (sim-000000 …). With --create the
missing ones are registered through the registry (bulk requests) with the
tags of --tags; without it they must exist, and their keys are read from
the registry.

One process holds at most about 19,000 sockets on a machine whose open-file
limit is 20,000: for more devices start several herd sim processes with
different --prefix values.`,
		Example: `  herd sim --devices 2000 --create --tags 'building=43:50%,44:50%'
  herd sim --devices 10000 --create --transport mqtt-plain --address localhost:1883 --connect-rate 2000
  herd sim --connection-string "$CS" --ca ca.pem --transport websocket --devices 100 --telemetry-interval 10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSim(cmd.Context(), cmd, e, &cf, &sf)
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.IntVar(&sf.devices, "devices", 1000, "how many devices to simulate")
	f.StringVar(&sf.prefix, "prefix", "sim-", "device id prefix (ids are the prefix and a zero-padded index)")
	f.BoolVar(&sf.create, "create", false, "register the devices that do not exist yet (bulk, through the registry)")
	f.StringVar(&sf.tags, "tags", "", "tags of the devices --create registers: 'building=43:50%,44:50%;ring=canary:10%,prod:90%'")
	f.StringVar(&sf.transport, "transport", "mqtt", "mqtt (MQTT over TLS), mqtt-plain (unencrypted TCP) or websocket (MQTT over secure WebSocket)")
	f.StringVar(&sf.address, "address", "", "where devices connect: host:port for mqtt and mqtt-plain, a wss:// URL for websocket (default: the local hub's listeners in --data, else HostName:8883 or wss://HostName/$iothub/websocket)")
	f.Float64Var(&sf.connectRate, "connect-rate", 0, "connection attempts per second at most (0: as fast as --concurrency allows)")
	f.IntVar(&sf.concurrency, "concurrency", 256, "connection attempts in flight at most")
	f.DurationVar(&sf.latency, "method-latency", 0, "how long a device takes to answer a direct method")
	f.Float64Var(&sf.failureRate, "method-failure-rate", 0, "share of method calls (0 to 1) answered with status 500")
	f.Float64Var(&sf.dropRate, "method-drop-rate", 0, "share of method calls (0 to 1) never answered (the hub times them out)")
	f.DurationVar(&sf.telemetry, "telemetry-interval", 0, "each device sends a telemetry message this often (0: none)")
	f.BoolVar(&sf.reportDesired, "report-desired", true, "report applied desired properties back as reported properties")
	f.DurationVar(&sf.statusEvery, "status-interval", 0, "how often to print the status (default: 1s on a terminal, 10s otherwise)")
	return cmd
}

func runSim(ctx context.Context, cmd *cobra.Command, e *env, cf *clientFlags, sf *simFlags) error {
	if err := bindEnv(cmd, e.lookupEnv); err != nil {
		return err
	}
	if sf.devices <= 0 {
		return fmt.Errorf("--devices %d: give a positive number", sf.devices)
	}
	tags, err := sim.ParseTags(sf.tags)
	if err != nil {
		return fmt.Errorf("--tags: %w", err)
	}
	if len(tags) > 0 && !sf.create {
		return errors.New("--tags: tags are given to the devices --create registers; add --create")
	}
	client, err := cf.client(ctx, cmd, e)
	if err != nil {
		return err
	}
	dial, err := simDialer(ctx, cf, sf, client.HostName())
	if err != nil {
		return err
	}
	cfg := sim.Config{Host: client.HostName(), Dial: dial, Concurrency: sf.concurrency, ConnectRate: sf.connectRate,
		Reconnect: true, Telemetry: sf.telemetry, ReportDesired: sf.reportDesired,
		MethodLatency: sf.latency, MethodFailureRate: sf.failureRate, MethodDropRate: sf.dropRate}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("--method-*: %w", err)
	}
	start := time.Now()
	prov, err := sim.Provision(ctx, client, sim.DeviceIDs(sf.prefix, sf.devices), tags, sf.create, 8)
	if err != nil {
		return err
	}
	if sf.create {
		fmt.Fprintf(e.stdout, "Registered %d devices (%d existed) in %s.\n", prov.Created, sf.devices-prov.Created, time.Since(start).Round(time.Millisecond))
	}
	cfg.Devices = prov.Identities
	fleet := sim.New(cfg)
	tty := isTerminal(e.stdout)
	every := sf.statusEvery
	if every <= 0 {
		every = 10 * time.Second
		if tty {
			every = time.Second
		}
	}
	fmt.Fprintf(e.stdout, "Connecting %d devices (%s, %s) to %s; Ctrl-C stops.\n", sf.devices, sf.transport, simTarget(cf, sf), client.HostName())
	started := time.Now()
	connected := make(chan error, 1)
	go func() { connected <- fleet.Connect(ctx) }()
	status := newSimStatus(e.stdout, tty, sf.devices)
	t := time.NewTicker(every)
	defer t.Stop()
	for done := false; !done; {
		select {
		case err := <-connected:
			connected = nil
			if err != nil && ctx.Err() == nil {
				status.note(fmt.Sprintf("%v (retrying in the background)", err))
			} else if err == nil {
				status.note(fmt.Sprintf("all %d devices connected in %s", sf.devices, time.Since(started).Round(time.Millisecond)))
			}
			status.print(fleet.Stats())
		case <-t.C:
			status.print(fleet.Stats())
		case <-ctx.Done():
			done = true
		}
	}
	if connected != nil {
		<-connected
	}
	fleet.Disconnect()
	status.final(fleet.Stats())
	return nil
}

// simTarget describes where the devices connect, for the first line.
func simTarget(cf *clientFlags, sf *simFlags) string {
	if sf.address != "" {
		return sf.address
	}
	return "the hub's default address"
}

// simDialer builds the transport the flags ask for.
func simDialer(ctx context.Context, cf *clientFlags, sf *simFlags, host string) (sim.Dialer, error) {
	tlsConfig := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	ca := cf.ca
	if ca == "" {
		if p := filepath.Join(cf.data, certs.CAFile); fileExists(p) {
			ca = p
		}
	}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", ca)
		}
		tlsConfig.RootCAs = pool
	}
	// The local hub's listeners, when no connection string names another.
	var local map[string]string
	if cf.connectionString == "" {
		local = localListeners(ctx, cf.store, cf.data)
	}
	addr := sf.address
	switch sf.transport {
	case "mqtt", "mqtt-plain":
		setting, what := "mqtt_addr", "MQTT over TLS"
		if sf.transport == "mqtt-plain" {
			setting, what = "mqtt_plain_addr", "plain MQTT"
		}
		if addr == "" {
			if a := local[setting]; a != "" {
				addr = dialable(a, host)
			} else if cf.connectionString == "" && local != nil {
				return nil, fmt.Errorf("--transport %s: the hub in %s does not listen for %s (start it with --%s, or give --address)", sf.transport, cf.data, what, strings.ReplaceAll(setting, "_", "-"))
			} else if sf.transport == "mqtt" {
				addr = net.JoinHostPort(host, "8883")
			} else {
				return nil, errors.New("--transport mqtt-plain: give --address host:port (plain MQTT has no standard port on a hub)")
			}
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--address %q: give host:port", addr)
		}
		sf.address = addr
		if sf.transport == "mqtt-plain" {
			return sim.TCP(addr, nil), nil
		}
		return sim.TCP(addr, tlsConfig), nil
	case "websocket":
		if addr == "" {
			switch {
			case cf.url != "":
				addr = strings.Replace(strings.TrimSuffix(cf.url, "/"), "https://", "wss://", 1) + gateway.WebSocketPath
			case local["https_addr"] != "":
				addr = "wss://" + dialable(local["https_addr"], host) + gateway.WebSocketPath
			default:
				addr = "wss://" + host + gateway.WebSocketPath
			}
		}
		if u, err := url.Parse(addr); err != nil || u.Scheme != "wss" || u.Host == "" {
			return nil, fmt.Errorf("--address %q: give a wss:// URL such as wss://%s/$iothub/websocket", addr, host)
		}
		sf.address = addr
		return sim.WebSocket(addr, tlsConfig), nil
	}
	return nil, fmt.Errorf("--transport %q: use mqtt, mqtt-plain or websocket", sf.transport)
}

// localListeners reads the listener addresses a hub records in its data
// folder or, without that record, in its store (nil when there is no hub
// there).
func localListeners(ctx context.Context, spec, dir string) map[string]string {
	if l := hub.Listeners(dir); l != nil {
		return l
	}
	db, err := openLocal(ctx, spec, dir)
	if err != nil {
		return nil
	}
	defer db.Close()
	m := map[string]string{}
	for _, k := range []string{"https_addr", "mqtt_addr", "mqtt_plain_addr"} {
		m[k], _ = db.Setting(ctx, k)
	}
	return m
}

// dialable turns a listener address into one to dial: an unspecified
// host ([::]:8883) becomes the hub's host name.
func dialable(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		h = host
	}
	return net.JoinHostPort(h, port)
}

// simStatus prints the fleet's one-line status: rewritten in place on a
// terminal, one plain line per interval otherwise.
type simStatus struct {
	w     io.Writer
	tty   bool
	total int
	start time.Time
	last  sim.Stats
	at    time.Time
}

func newSimStatus(w io.Writer, tty bool, total int) *simStatus {
	now := time.Now()
	return &simStatus{w: w, tty: tty, total: total, start: now, at: now}
}

func (s *simStatus) line(st sim.Stats) string {
	now := time.Now()
	rate := float64(st.MethodsAnswered-s.last.MethodsAnswered) / max(now.Sub(s.at).Seconds(), 0.001)
	s.last, s.at = st, now
	l := fmt.Sprintf("%s  connected %d/%d  methods %d (%.0f/s, %d failed, %d dropped)  desired %d  reported %d",
		time.Since(s.start).Round(time.Second), st.Connected, s.total, st.MethodsAnswered, rate, st.MethodsFailed, st.MethodsDropped,
		st.DesiredApplied, st.ReportedSent)
	if st.TelemetrySent > 0 {
		l += fmt.Sprintf("  telemetry %d", st.TelemetrySent)
	}
	return l + fmt.Sprintf("  errors %d", st.Errors+st.ConnectFailures)
}

func (s *simStatus) print(st sim.Stats) {
	if s.tty {
		fmt.Fprintf(s.w, "\r\x1b[2K%s", s.line(st))
		return
	}
	fmt.Fprintln(s.w, s.line(st))
}

// note prints a message on its own line.
func (s *simStatus) note(msg string) {
	if s.tty {
		fmt.Fprint(s.w, "\r\x1b[2K")
	}
	fmt.Fprintln(s.w, msg)
}

func (s *simStatus) final(st sim.Stats) {
	if s.tty {
		fmt.Fprintln(s.w)
	}
	fmt.Fprintf(s.w, "Stopped after %s: %d methods answered (%d failed, %d dropped), %d desired updates applied, %d reported, %d telemetry messages, %d connection failures, %d errors.\n",
		time.Since(s.start).Round(time.Millisecond), st.MethodsAnswered, st.MethodsFailed, st.MethodsDropped, st.DesiredApplied,
		st.ReportedSent, st.TelemetrySent, st.ConnectFailures, st.Errors)
}
