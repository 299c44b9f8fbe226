package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/sim"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/service"
)

// demoFlags are herd demo's flags.
type demoFlags struct {
	devices    int
	keep       bool
	data       string
	httpsAddr  string
	mqttAddr   string
	plain      bool
	startDelay time.Duration
	logLevel   string
}

// The tutorial's jobs (Azure IoT Hub, "Schedule and broadcast jobs").
const (
	demoCondition = "tags.building = 43"
	demoPrefix    = "door-"
	demoTags      = "building=43:50%,44:50%"
	// demoKeepDir is the data folder of a kept demo hub, so that the
	// commands to explore it are the same every time.
	demoKeepDir = "herd-demo"
	// demoKeepTelemetry is how often each device of a kept demo sends
	// telemetry.
	demoKeepTelemetry = 10 * time.Second
)

func demoCommand(e *env) *cobra.Command {
	var df demoFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Play the Azure IoT Hub jobs tutorial on an in-process hub with thousands of simulated devices",
		Long: `Play Azure IoT Hub's "Schedule and broadcast jobs" tutorial on your machine,
with no set-up: start a hub in-process (data in a temporary folder, free
ports), register and connect a few thousand simulated devices in two
buildings, schedule a lockDoor direct-method job and a desired-properties
twin job a few seconds ahead for the devices of building 43, follow both
with progress bars, and summarise what happened.

The devices connect over MQTT/TLS on loopback. This process holds both
ends of each connection, two open files per device: when the fleet does
not fit in the process's open-file limit (ulimit -n), the devices use the
in-memory transport instead — the same MQTT, handed to the hub's gateway
without sockets — and the demo says so. (For sockets beyond that limit run
the hub and the devices as separate processes: herd serve and herd sim.)

With --keep the hub and its devices stay up afterwards, and the command
prints the connection strings and CA the official Azure IoT SDKs need.`,
		Example: `  herd demo
  herd demo --devices 10000
  herd demo --keep`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd, e.lookupEnv); err != nil {
				return err
			}
			return runDemo(cmd.Context(), e, &df, cmd.Flags().Changed("https-addr"), cmd.Flags().Changed("mqtt-addr"))
		},
	}
	f := cmd.Flags()
	f.IntVar(&df.devices, "devices", 3000, "simulated devices, half in building 43 and half in building 44")
	f.BoolVar(&df.keep, "keep", false, "leave the hub and the devices running afterwards (Ctrl-C stops them) and print how to reach them with the official Azure IoT SDKs")
	f.StringVar(&df.data, "data", "", "data folder of the demo hub (default: a new temporary folder, removed at the end; with --keep, "+demoKeepDir+")")
	f.StringVar(&df.httpsAddr, "https-addr", "127.0.0.1:0", "address of the REST API (default: a free port; with --keep, :443 if it can be bound)")
	f.StringVar(&df.mqttAddr, "mqtt-addr", "127.0.0.1:0", `address of MQTT over TLS (default: a free port; with --keep, :8883 if it can be bound; "" turns it off and the devices use the in-memory transport)`)
	f.BoolVar(&df.plain, "plain", false, "plain output: one line per change instead of progress bars (the default when not on a terminal)")
	f.DurationVar(&df.startDelay, "start-delay", 5*time.Second, "how far ahead the jobs are scheduled")
	f.StringVar(&df.logLevel, "log-level", "error", "the hub's log level (logs go to stderr)")
	allowEmpty(f, "mqtt-addr")
	return cmd
}

// demo is one run of herd demo.
type demo struct {
	e      *env
	df     *demoFlags
	tty    bool
	hub    *hub.Hub
	client *service.Client
	fleet  *sim.Fleet
	dir    string
}

func runDemo(ctx context.Context, e *env, df *demoFlags, httpsGiven, mqttGiven bool) (err error) {
	if df.devices < 2 {
		return fmt.Errorf("--devices %d: give at least 2 (one per building)", df.devices)
	}
	if df.startDelay < 0 {
		return fmt.Errorf("--start-delay %s: must not be negative", df.startDelay)
	}
	log, err := newLogger(e, "text", df.logLevel)
	if err != nil {
		return err
	}
	d := &demo{e: e, df: df, tty: isTerminal(e.stdout) && !df.plain}
	d.dir = df.data
	if d.dir == "" && df.keep {
		d.dir = demoKeepDir
	}
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "herd-demo-"); err != nil {
			return err
		}
		if !df.keep {
			defer os.RemoveAll(d.dir)
		}
	}
	w := e.stdout
	fmt.Fprintf(w, "Herd demo: Azure IoT Hub's \"Schedule and broadcast jobs\" tutorial, on %d simulated devices.\n\n", df.devices)

	// 1. The hub.
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	hubDone := make(chan error, 1)
	if err := d.startHub(ctx, log, httpsGiven, mqttGiven); err != nil {
		stopHub()
		return err
	}
	go func() { hubDone <- d.hub.Run(hubCtx) }()
	defer func() {
		stopHub()
		if herr := <-hubDone; herr != nil && err == nil {
			err = herr
		}
	}()
	mqtt := "off"
	if a := d.hub.MQTTAddr(); a != nil {
		mqtt = mqttHostPort(d.hub, a)
	}
	fmt.Fprintf(w, "  hub        https://%s  MQTT/TLS %s  (data in %s)\n", hostPort(d.hub), mqtt, d.dir)

	// 2. The devices.
	start := time.Now()
	tags, _ := sim.ParseTags(demoTags)
	ids := sim.DeviceIDs(demoPrefix, df.devices)
	prov, err := sim.Provision(ctx, d.client, ids, tags, true, 8)
	if err != nil {
		return err
	}
	in43 := tags.Count("building", 43, df.devices)
	fmt.Fprintf(w, "  registry   %d devices registered through the REST API (%d existed): %d in building 43, %d in building 44  %s\n",
		prov.Created, df.devices-prov.Created, in43, df.devices-in43, since(start))
	limit, known := openFileLimit()
	tr := chooseTransport(df.devices, d.hub.MQTTAddr() != nil, limit, known)
	fmt.Fprintf(w, "  transport  %s\n", tr.why)
	dial, err := d.dialer(tr)
	if err != nil {
		return err
	}
	fc := sim.Config{Host: d.hub.Hostname(), Devices: prov.Identities, Concurrency: 64, ReportDesired: true, Reconnect: true, Dial: dial}
	if df.keep {
		fc.Telemetry = demoKeepTelemetry // something for the dashboard's monitor to show
	}
	d.fleet = sim.New(fc)
	start = time.Now()
	if err := d.connect(ctx, tr); err != nil {
		d.fleet.Disconnect()
		return err
	}
	defer d.fleet.Disconnect()
	fmt.Fprintf(w, "  devices    %d simulated devices connected %s, answering lockDoor and reporting desired properties  %s\n\n", df.devices, tr.how(), since(start))

	// 3. The tutorial's two jobs.
	stamp := time.Now().UTC().Format("20060102-150405")
	methodJob, twinJob := "lockdoor-"+stamp, "desired-"+stamp
	at := time.Now().Add(df.startDelay).Truncate(time.Second).Add(time.Second)
	opts := service.JobOptions{StartTime: at, MaxExecutionTime: 10 * time.Minute}
	if _, err := d.client.ScheduleDeviceMethod(ctx, methodJob, demoCondition, herd.MethodRequest{MethodName: "lockDoor",
		Payload: json.RawMessage(`{"lockTime":"10m"}`), ResponseTimeoutInSeconds: 15}, opts); err != nil {
		return err
	}
	if _, err := d.client.ScheduleTwinUpdate(ctx, twinJob, demoCondition, herd.TwinPatch{Properties: &herd.PatchProperties{
		Desired: map[string]any{"building": 43, "floor": 3}}}, opts); err != nil {
		return err
	}
	fmt.Fprintf(w, "Scheduled for %s (in %s), on every device where %s:\n", at.Local().Format("15:04:05"), time.Until(at).Round(time.Second), demoCondition)
	fmt.Fprintf(w, "  %-26s direct method lockDoor {\"lockTime\":\"10m\"}\n", methodJob)
	fmt.Fprintf(w, "  %-26s twin update, desired properties {\"building\":43,\"floor\":3}\n\n", twinJob)
	jobs, err := d.follow(ctx, methodJob, twinJob)
	if err != nil {
		return err
	}

	// 4. Summary.
	reported := d.reportedFloor(ctx, int64(in43))
	d.summary(jobs, in43, reported)
	for _, j := range jobs {
		if j.Status != herd.JobCompleted {
			return fmt.Errorf("job %s ended %s: %s", j.JobID, j.Status, j.FailureReason)
		}
	}
	d.printExplore(methodJob)
	if !df.keep {
		return nil
	}
	d.printKeep()
	<-ctx.Done()
	fmt.Fprintln(w, "\nStopping the demo hub.")
	return nil
}

// demoFileReserve is how many open files the demo keeps for everything but
// its devices' connections: the database, the listeners, HTTP connections.
const demoFileReserve = 256

// demoTransport is how the demo's devices reach its hub, and why.
type demoTransport struct {
	// memory is the in-memory transport (sim.Pipe into the hub's
	// gateway); otherwise MQTT over TLS on loopback.
	memory bool
	why    string
}

// how completes "N simulated devices connected …".
func (t demoTransport) how() string {
	if t.memory {
		return "through the in-memory transport"
	}
	return "over MQTT/TLS"
}

// chooseTransport decides how the demo connects devices: over MQTT/TLS when
// the hub listens for it and the process may hold both ends of every
// connection (two open files per device, plus demoFileReserve) within its
// open-file limit (when known), otherwise through the in-memory transport,
// which carries the same MQTT to the hub's gateway without sockets.
func chooseTransport(devices int, mqttOn bool, limit uint64, known bool) demoTransport {
	need := 2*uint64(devices) + demoFileReserve
	switch {
	case !mqttOn:
		return demoTransport{memory: true, why: `in-memory (MQTT in this process, no sockets): the hub's MQTT over TLS is off (--mqtt-addr "")`}
	case known && need > limit:
		return demoTransport{memory: true, why: fmt.Sprintf("in-memory (MQTT in this process, no sockets): %d devices over MQTT/TLS would need ~%d open files "+
			"(both ends of every connection are in this process) and its limit is %d", devices, need, limit)}
	case known:
		return demoTransport{why: fmt.Sprintf("MQTT over TLS on loopback: %d devices need ~%d of this process's %d open files", devices, need, limit)}
	}
	return demoTransport{why: "MQTT over TLS on loopback"}
}

// dialer returns the fleet's dialer for tr: the in-memory transport, or
// MQTT over TLS to the hub's host name (which its certificate covers).
func (d *demo) dialer(tr demoTransport) (sim.Dialer, error) {
	if tr.memory {
		return sim.Pipe(d.hub.Gateway.ServeConn), nil
	}
	ca, err := os.ReadFile(d.hub.CAFile())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return sim.TCP(dialable(d.hub.MQTTAddr().String(), d.hub.Hostname()),
		&tls.Config{RootCAs: pool, ServerName: d.hub.Hostname(), MinVersion: tls.VersionTLS12}), nil
}

// connect connects the fleet, showing the count on a terminal while the
// connections (TLS handshakes, SAS authentication) are made.
func (d *demo) connect(ctx context.Context, tr demoTransport) error {
	done := make(chan error, 1)
	go func() { done <- d.fleet.Connect(ctx) }()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			if d.tty {
				fmt.Fprint(d.e.stdout, "\r\x1b[K")
			}
			return err
		case <-t.C:
			if d.tty {
				fmt.Fprintf(d.e.stdout, "\r  devices    connecting %s: %d of %d\x1b[K", tr.how(), d.fleet.Stats().Connected, d.df.devices)
			}
		}
	}
}

func since(t time.Time) string { return "(" + time.Since(t).Round(time.Millisecond).String() + ")" }

// startHub starts the in-process hub. With --keep and no address given it
// tries the official SDKs' ports (443, 8883) first and falls back to free
// ones, saying what to do.
func (d *demo) startHub(ctx context.Context, log *slog.Logger, httpsGiven, mqttGiven bool) error {
	cfg := hub.Default()
	cfg.DataDir, cfg.Log = d.dir, log
	cfg.HTTPSAddr, cfg.MQTTAddr, cfg.MQTTPlainAddr = d.df.httpsAddr, d.df.mqttAddr, ""
	if d.df.keep && !httpsGiven && !mqttGiven {
		official := cfg
		official.HTTPSAddr, official.MQTTAddr = ":443", ":8883"
		var err error
		if official.Store, err = store.Open(ctx, "", d.dir); err != nil {
			return err
		}
		h, err := hub.New(ctx, official)
		if err == nil {
			d.hub = h
			return d.connectClient()
		}
		if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		fmt.Fprintf(d.e.stdout, "  note       could not listen on ports 443 and 8883 (%v);\n"+
			"             using free ports: Herd's CLI and Go SDKs work with them, the official Azure IoT SDKs need 443 and 8883 —\n"+
			"             run as root, or `sudo setcap cap_net_bind_service=+ep $(which herd)`, and stop what holds the ports.\n", rootCause(err))
	}
	var err error
	if cfg.Store, err = store.Open(ctx, "", d.dir); err != nil {
		return err
	}
	h, err := hub.New(ctx, cfg)
	if err != nil {
		return err
	}
	d.hub = h
	return d.connectClient()
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func (d *demo) connectClient() error {
	cs, err := d.hub.ConnectionString("iothubowner")
	if err != nil {
		d.hub.Close()
		return err
	}
	// The host name with the bound port, as herd serve prints it: the
	// certificate covers the host name, not the listen address ([::]:443).
	d.client, err = service.New(cs, service.WithCAFile(d.hub.CAFile()), service.WithEndpoint("https://"+hostPort(d.hub)))
	if err != nil {
		d.hub.Close()
	}
	return err
}

// follow polls both jobs until they have ended, drawing a progress bar for
// each on a terminal (the same bars as herd job watch) or printing a
// plain line when a job's state changes.
func (d *demo) follow(ctx context.Context, ids ...string) ([]*herd.Job, error) {
	w := d.e.stdout
	bars := make([]*progressbar.ProgressBar, len(ids))
	last := make([]string, len(ids))
	jobs := make([]*herd.Job, len(ids))
	drawn := 0
	every := 250 * time.Millisecond
	if d.tty {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ended := 0
		for i, id := range ids {
			j, err := d.client.GetJob(ctx, id)
			if err != nil {
				return nil, err
			}
			jobs[i] = j
			if service.Ended(j) {
				ended++
			}
		}
		if d.tty {
			lines := make([]string, len(ids))
			for i, j := range jobs {
				st := jobStats(j)
				if bars[i] == nil && st.DeviceCount > 0 {
					bars[i] = newJobBar(st.DeviceCount, io.Discard, progressbar.OptionSetWidth(30))
				}
				if bars[i] == nil {
					wait := ""
					if j.StartTime != nil {
						wait = fmt.Sprintf(", starts in %s", max(time.Until(j.StartTime.Time), 0).Round(time.Second))
					}
					lines[i] = fmt.Sprintf("%-26s %s%s", j.JobID, j.Status, wait)
					continue
				}
				bars[i].Describe(jobDescription(j))
				_ = bars[i].Set64(st.SucceededCount + st.FailedCount)
				lines[i] = fmt.Sprintf("%-26s %s", j.JobID, strings.TrimLeft(bars[i].String(), "\r "))
			}
			if drawn > 1 {
				fmt.Fprintf(w, "\x1b[%dA", drawn-1)
			}
			for i, l := range lines {
				fmt.Fprintf(w, "\r%s\x1b[K", l)
				if i < len(lines)-1 {
					fmt.Fprintln(w)
				}
			}
			drawn = len(lines)
		} else {
			for i, j := range jobs {
				if desc := jobDescription(j); desc != last[i] {
					fmt.Fprintln(w, jobLine(j))
					last[i] = desc
				}
			}
		}
		if ended == len(ids) {
			if d.tty {
				fmt.Fprintln(w)
			}
			fmt.Fprintln(w)
			return jobs, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// reportedFloor waits (up to 10 s) until want devices have reported
// floor 3 back, and returns how many have.
func (d *demo) reportedFloor(ctx context.Context, want int64) int64 {
	deadline := time.Now().Add(10 * time.Second)
	var n int64
	for {
		page, err := d.client.QueryPage(ctx, "SELECT COUNT() AS n FROM devices WHERE properties.reported.floor = 3 AND tags.building = 43", 1, "")
		if err == nil && len(page.Items) == 1 {
			var row struct{ N int64 }
			if json.Unmarshal(page.Items[0], &row) == nil {
				n = row.N
			}
		}
		if n >= want || time.Now().After(deadline) || ctx.Err() != nil {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *demo) summary(jobs []*herd.Job, in43 int, reported int64) {
	w := d.e.stdout
	fmt.Fprintln(w, "Summary")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  job\tstatus\tdevices\tsucceeded\tfailed\tduration\tdevices/s\t")
	for _, j := range jobs {
		st := jobStats(j)
		took := max(j.EndTime.Sub(j.StartTime.Time), time.Millisecond)
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%s\t%.0f\t\n", j.JobID, j.Status, st.DeviceCount, st.SucceededCount, st.FailedCount,
			took.Round(time.Millisecond), float64(st.DeviceCount)/took.Seconds())
	}
	tw.Flush()
	st := d.fleet.Stats()
	fmt.Fprintf(w, "\n  %d of %d devices in building 43 answered lockDoor; %d reported floor 3 back; building 44 was not touched.\n",
		st.MethodsAnswered, in43, reported)
	fmt.Fprintf(w, "  Azure IoT Hub S1 runs 10 job device operations per second: these %d operations would take it %s.\n\n",
		2*in43, (time.Duration(2*in43) * time.Second / 10).Round(time.Second))
}

// printExplore prints the commands that explore the hub further (kept
// with --keep).
func (d *demo) printExplore(methodJob string) {
	w := d.e.stdout
	dir := d.dir
	if d.df.keep {
		fmt.Fprintf(w, "The hub keeps running with its %d devices (Ctrl-C stops it). Explore it from another terminal:\n\n", d.df.devices)
	} else {
		dir = demoKeepDir
		fmt.Fprintf(w, "Explore further: `herd demo --keep` leaves the hub running with its devices (data in ./%s); then, in another terminal:\n\n", dir)
	}
	for _, c := range []string{
		"herd job list --data " + dir,
		"herd job show " + methodJob + " --data " + dir,
		"herd query --data " + dir + " \"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '" + methodJob + "'\"",
		"herd query --data " + dir + " \"SELECT tags.building, properties.reported.floor, COUNT() AS n FROM devices GROUP BY tags.building, properties.reported.floor\"",
		"herd twin show " + demoPrefix + "000000 --data " + dir,
		"herd job schedule-method reboot-44 --method reboot --query \"tags.building = 44\" --wait --data " + dir,
	} {
		if !d.df.keep && strings.Contains(c, methodJob) {
			continue // the job ids of a kept run differ
		}
		fmt.Fprintf(w, "  %s\n", c)
	}
	fmt.Fprintln(w)
}

// printKeep tells how to reach the kept hub with the official SDKs.
func (d *demo) printKeep() {
	w := d.e.stdout
	cs, _ := d.hub.ConnectionString("iothubowner")
	dev, _ := d.hub.DeviceConnectionString(context.Background(), demoPrefix+"000000")
	fmt.Fprintf(w, "The dashboard: %s (sign in with the service connection string below; the devices send telemetry every %s).\n\n",
		d.hub.DashboardURL(), demoKeepTelemetry)
	fmt.Fprintf(w, "For the official Azure IoT SDKs:\n\n")
	fmt.Fprintf(w, "  service connection string  %s\n", cs)
	fmt.Fprintf(w, "  device connection string   %s\n", dev)
	fmt.Fprintf(w, "  CA certificate             %s   (Node: export NODE_EXTRA_CA_CERTS=%s)\n", d.hub.CAFile(), d.hub.CAFile())
	if !strings.HasSuffix(d.hub.HTTPSAddr().String(), ":443") {
		fmt.Fprintf(w, "\n  The REST API listens on %s, not 443: the official service SDKs only reach port 443, so they cannot use this hub.\n"+
			"  Stop the demo and rerun `herd demo --keep` as root or after `sudo setcap cap_net_bind_service=+ep $(which herd)`.\n", d.hub.HTTPSAddr())
	}
	fmt.Fprintf(w, "\nAfter Ctrl-C, `herd serve --data %s` starts this hub again (without the simulated devices).\n\n", d.dir)
}
