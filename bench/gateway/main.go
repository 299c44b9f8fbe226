// Command gateway benchmarks Herd's device gateway with a fleet of
// simulated devices in a separate process, over real loopback MQTT:
//
//   - RSS per idle connected device (plain MQTT and TLS), measured in the
//     hub process;
//   - direct-method round trips per second through method.Service.Invoke
//     (hub → device → hub), with p50/p99 latency;
//   - SAS-authenticated connects per second (cold: first connects; warm:
//     reconnects with the registry's key cache filled).
//
// Run it on a quiet machine, holding the shared benchmark lock:
//
//	flock /tmp/herd-bench.lock go run ./bench/gateway -devices 10000
//
// The hub role (default) starts a hub in-process, registers the devices,
// and re-executes itself with -role fleet to run the simulated devices,
// which it drives over stdin/stdout. Results go to stdout as Markdown.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/bench/measure"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/sim"
)

func main() {
	role := flag.String("role", "hub", "hub (default) or fleet (internal)")
	devices := flag.Int("devices", 10000, "simulated devices")
	duration := flag.Duration("duration", 10*time.Second, "how long to measure method round trips")
	inflight := flag.Int("inflight", 2000, "method calls in flight")
	concurrency := flag.Int("connect-concurrency", 512, "connection attempts in flight")
	withTLS := flag.Bool("tls", true, "also measure TLS connections")
	ids := flag.String("ids", "", "(fleet) identities file")
	host := flag.String("host", "localhost", "(fleet) hub host name")
	plain := flag.String("plain", "", "(fleet) plain MQTT address")
	tlsAddr := flag.String("tls-addr", "", "(fleet) TLS MQTT address")
	ca := flag.String("ca", "", "(fleet) CA file")
	fleetProcs := flag.Int("fleet-procs", 0, "GOMAXPROCS of the fleet process (0: Go's default)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the plain method phase (hub role) or of the whole run (fleet role, with suffix .fleet)")
	flag.Parse()
	profile = *cpuProfile
	fleetGOMAXPROCS = *fleetProcs
	var err error
	if *role == "fleet" {
		err = fleet(*ids, *host, *plain, *tlsAddr, *ca, *concurrency)
	} else {
		err = bench(*devices, *duration, *inflight, *concurrency, *withTLS)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// profile is the -cpuprofile path; fleetGOMAXPROCS the -fleet-procs value.
var (
	profile         string
	fleetGOMAXPROCS int
)

// reply is the fleet's answer to one command.
type reply struct {
	N       int     `json:"n"`
	Seconds float64 `json:"seconds"`
	Err     string  `json:"err,omitempty"`
}

// fleet runs the simulated devices and obeys commands on stdin:
// "connect plain", "connect tls", "disconnect", "quit".
func fleet(idsFile, host, plainAddr, tlsAddr, caFile string, concurrency int) error {
	b, err := os.ReadFile(idsFile)
	if err != nil {
		return err
	}
	var ids []sim.Identity
	if err := json.Unmarshal(b, &ids); err != nil {
		return err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	if profile != "" {
		pf, err := os.Create(profile + ".fleet")
		if err != nil {
			return err
		}
		_ = pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
	}
	var f *sim.Fleet
	out := json.NewEncoder(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd := strings.Fields(sc.Text())
		if len(cmd) == 0 {
			continue
		}
		start := time.Now()
		var r reply
		switch cmd[0] {
		case "connect":
			cfg := sim.Config{Host: host, Addr: plainAddr, Devices: ids, Concurrency: concurrency}
			if len(cmd) > 1 && cmd[1] == "tls" {
				cfg.Addr = tlsAddr
				cfg.TLS = &tls.Config{RootCAs: pool, ServerName: host}
			}
			f = sim.New(cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			err := f.Connect(ctx)
			cancel()
			r.N = int(f.Stats().Connected)
			if err != nil {
				r.Err = err.Error()
			}
		case "disconnect":
			if f != nil {
				f.Disconnect()
			}
		case "quit":
			if f != nil {
				f.Disconnect()
			}
			return out.Encode(reply{})
		}
		r.Seconds = time.Since(start).Seconds()
		if err := out.Encode(r); err != nil {
			return err
		}
	}
	return sc.Err()
}

// child is the fleet process as the hub side drives it.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
}

func (c *child) do(command string) (reply, error) {
	if _, err := fmt.Fprintln(c.in, command); err != nil {
		return reply{}, err
	}
	var r reply
	if err := c.out.Decode(&r); err != nil {
		return r, fmt.Errorf("%s: %w", command, err)
	}
	if r.Err != "" {
		return r, fmt.Errorf("%s: %s", command, r.Err)
	}
	return r, nil
}

func waitConnected(h *hub.Hub, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for h.Bus.Connected() != n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d devices connected, want %d", h.Bus.Connected(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func bench(n int, duration time.Duration, inflight, concurrency int, withTLS bool) error {
	dir, err := os.MkdirTemp("", "herd-bench-gateway-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := hub.Default()
	cfg.DataDir = dir
	cfg.HTTPSAddr = "127.0.0.1:0"
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.MQTTPlainAddr = "127.0.0.1:0"
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := hub.New(ctx, cfg)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Register the fleet.
	ids := make([]sim.Identity, n)
	for i := range ids {
		ids[i] = sim.Identity{ID: fmt.Sprintf("bench-%05d", i), Key: auth.NewKey()}
	}
	for i := 0; i < n; i += 100 {
		var batch []herd.ImportDevice
		for _, id := range ids[i:min(i+100, n)] {
			batch = append(batch, herd.ImportDevice{ID: id.ID, ImportMode: herd.ImportCreate, Status: herd.DeviceEnabled,
				Authentication: &herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: id.Key, SecondaryKey: auth.NewKey()}}})
		}
		res, err := h.Registry.Bulk(ctx, batch)
		if err != nil || !res.IsSuccessful {
			return fmt.Errorf("register devices: %v %+v", err, res.Errors)
		}
	}
	idsFile := filepath.Join(dir, "ids.json")
	b, _ := json.Marshal(ids)
	if err := os.WriteFile(idsFile, b, 0o600); err != nil {
		return err
	}

	cmd := exec.Command(os.Args[0], "-role", "fleet", "-ids", idsFile, "-host", cfg.Hostname,
		"-plain", h.MQTTPlainAddr().String(), "-tls-addr", h.MQTTAddr().String(), "-ca", h.CAFile(),
		"-connect-concurrency", strconv.Itoa(concurrency), "-cpuprofile", profile)
	cmd.Stderr = os.Stderr
	if fleetGOMAXPROCS > 0 {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(fleetGOMAXPROCS))
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	c := &child{cmd: cmd, in: in, out: json.NewDecoder(stdout)}
	defer func() {
		_, _ = c.do("quit")
		in.Close()
		_ = cmd.Wait()
	}()

	var results []string
	add := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		results = append(results, line)
		fmt.Fprintln(os.Stderr, line)
	}

	// 1. Cold connects over plain MQTT, then RSS per idle device.
	base := measure.SettledRSS()
	r, err := c.do("connect plain")
	if err != nil {
		return err
	}
	if err := waitConnected(h, int64(n), time.Minute); err != nil {
		return err
	}
	add("| SAS-authenticated connects/s, plain, first connect (cold key cache) | %.0f/s (%d devices in %.2f s, %d in flight) | ≥ 10,000/s |", float64(n)/r.Seconds, n, r.Seconds, concurrency)
	time.Sleep(2 * time.Second) // connection-state batches flushed
	idle := measure.SettledRSS()
	add("| RSS per idle connected device, plain MQTT | %.1f KB (hub RSS %d → %d MB) | ≤ 10 KB |", float64(idle-base)/float64(n), base/1024, idle/1024)

	// 2. Method round trips through method.Service.Invoke.
	if profile != "" {
		pf, err := os.Create(profile)
		if err != nil {
			return err
		}
		_ = pprof.StartCPUProfile(pf)
	}
	rt := measure.MeasureRoundTrips(context.Background(), h.Methods, ids, duration, inflight)
	pprof.StopCPUProfile()
	add("| direct-method round trips/s through method.Invoke (%d devices, %d in flight) | %.0f/s, p50 %s, p99 %s, %d errors | ≥ 60,000/s |",
		n, inflight, rt.Rate, rt.P50.Round(10*time.Microsecond), rt.P99.Round(10*time.Microsecond), rt.Errors)

	// 3. Warm reconnects.
	if _, err := c.do("disconnect"); err != nil {
		return err
	}
	if err := waitConnected(h, 0, time.Minute); err != nil {
		return err
	}
	if profile != "" {
		pf, err := os.Create(profile + ".connect")
		if err != nil {
			return err
		}
		_ = pprof.StartCPUProfile(pf)
	}
	r, err = c.do("connect plain")
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	add("| SAS-authenticated connects/s, plain, reconnect (warm key cache, session present) | %.0f/s (%d devices in %.2f s) | ≥ 10,000/s |", float64(n)/r.Seconds, n, r.Seconds)
	if _, err := c.do("disconnect"); err != nil {
		return err
	}
	if err := waitConnected(h, 0, time.Minute); err != nil {
		return err
	}

	// 4. TLS.
	if withTLS {
		time.Sleep(2 * time.Second)
		base := measure.SettledRSS()
		if r, err = c.do("connect tls"); err != nil {
			return err
		}
		if err := waitConnected(h, int64(n), time.Minute); err != nil {
			return err
		}
		add("| SAS-authenticated connects/s, TLS (full handshakes) | %.0f/s (%d devices in %.2f s) | — |", float64(n)/r.Seconds, n, r.Seconds)
		time.Sleep(2 * time.Second)
		idle := measure.SettledRSS()
		add("| RSS per idle connected device, TLS | %.1f KB (hub RSS %d → %d MB) | — |", float64(idle-base)/float64(n), base/1024, idle/1024)
		rt := measure.MeasureRoundTrips(context.Background(), h.Methods, ids, duration, inflight)
		add("| direct-method round trips/s over TLS (%d devices, %d in flight) | %.0f/s, p50 %s, p99 %s, %d errors | — |",
			n, inflight, rt.Rate, rt.P50.Round(10*time.Microsecond), rt.P99.Round(10*time.Microsecond), rt.Errors)
	}
	fmt.Println("| what | measured | target |")
	fmt.Println("|---|---|---|")
	for _, l := range results {
		fmt.Println(l)
	}
	return nil
}
