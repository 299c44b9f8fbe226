// Command bench measures Herd's performance budget (ARCHITECTURE.md) on
// this machine and prints it as a Markdown table: each figure beside its
// target and, for jobs, beside the time the same job takes under Azure IoT
// Hub's published throttles (S1: 10 job device operations per second; S3:
// 50 per second per unit) and AWS IoT Jobs' rollout limit (1,000 devices
// per minute).
//
//	go run ./bench            # the full run (1M-device fleets are built once into -dir)
//	go run ./bench --quick    # smaller fleets, under two minutes
//	make bench                # the full run, holding /tmp/herd-bench.lock
//
// What runs where:
//
//   - gateway: the hub runs in this process and the simulated devices
//     (internal/sim) in a child process (this program re-executed with
//     HERD_BENCH_ROLE=fleet), over plain MQTT on loopback, so the memory
//     per idle device is the hub's own RSS. Method round trips go through
//     method.Service.Invoke, the gateway and back; connects are SAS
//     authenticated. These are bench/gateway's measurements (the
//     gateway's own tool, which also measures TLS), at the budget's scale.
//   - method jobs: over the same socket fleet (10,000 devices), and over
//     the in-memory transport (sim.Pipe: every device a net.Pipe served by
//     the hub's gateway in this process) for fleets larger than one
//     process may hold sockets (~19k here).
//   - twin jobs and queries: on fleets built by internal/fleetdb (the same
//     databases as the internal/job and internal/store/sqlite benchmarks),
//     through a whole hub (twin jobs) and the query service (queries).
//   - start precision: jobs due 50 ms apart on a hub; how late each
//     started after its startTime.
//
// The package's go test benchmarks (BenchmarkMethodJob10k against a real
// `herd serve` child, BenchmarkMethodJobInProcess) are the jobs work's
// end-to-end benchmarks; docs/benchmarks.md records every figure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	stop := func() {}
	if dir := os.Getenv(profileEnv); dir != "" {
		var err error
		if stop, err = profileCPU(dir); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	code := serve()
	stop()
	os.Exit(code)
}

// profileEnv, if set, names a folder where each process of a run (the
// harness, the nodes, the fleets) writes a CPU profile of its life; the
// cluster section then leaves out the failover (a killed node writes
// none).
const profileEnv = "HERD_BENCH_PROFILE_DIR"

func profileCPU(dir string) (func(), error) {
	role := os.Getenv(roleEnv)
	if role == "" {
		role = "harness"
	}
	return cpuProfile(filepath.Join(dir, fmt.Sprintf("cpu-%s-%d.pprof", role, os.Getpid())))
}

// cpuProfile starts a CPU profile written to path; stop ends it.
func cpuProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func serve() int {
	switch os.Getenv(roleEnv) {
	case "fleet":
		if err := fleetMain(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench fleet:", err)
			return 1
		}
		return 0
	case "node":
		if err := nodeMain(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench node:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

// config is what to measure, at which scale.
type config struct {
	quick          bool
	gatewayDevices int           // devices over real sockets
	inflight       int           // method calls in flight for round trips
	roundTrips     time.Duration // how long round trips are measured
	jobRuns        int           // runs of each method and twin job (the median is reported)
	pipeDevices    []int         // method jobs over the in-memory transport
	twinDevices    []int         // twin jobs
	queryTwins     int           // twins the queries run over
	queryRuns      int           // runs of each query (the median is reported)
	startJobs      int           // jobs of the start-precision measurement
	importDevices  int           // devices of the bulk import
	copyDevices    int           // devices of the hub herd store copy copies
	clusterNodes   int           // nodes of the cluster section
	clusterDevices int           // devices spread over them
	clusterTwin    int           // registered devices of the cluster's twin job
	stores         []string      // storeSQLite, storePostgres
	postgres       string        // a PostgreSQL server to use instead of a throwaway one
	dir            string        // where fleet databases are cached
	sections       map[string]bool
	out            string // also write the report here
}

// bench is one run: its configuration, its report, its log and the stores
// it measures side by side.
type bench struct {
	cfg      *config
	r        *report
	logf     func(string, ...any)
	backends []*backend
}

// sectionNames are the parts of a run, in order.
// The cluster section runs only when asked (--cluster, or --only).
var sectionNames = []string{"peers", "gateway", "methodjob", "twinjob", "query", "import", "copy", "start", "cluster"}

// peerSections are what --peers runs: every figure that issue 17 measures
// against a limit in the same run (a peer broker, the round trips, the raw
// store).
var peerSections = []string{"peers", "gateway", "methodjob", "twinjob", "query"}

func parseConfig(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "smaller fleets and shorter runs: under two minutes")
	gw := fs.Int("gateway-devices", 0, "devices connected over plain MQTT sockets (default 10000; quick 2000)")
	inflight := fs.Int("inflight", 2000, "method calls in flight while measuring round trips")
	rt := fs.Duration("round-trips", 0, "how long method round trips are measured (default 10s; quick 3s)")
	jobRuns := fs.Int("job-runs", 0, "runs of each method and twin-update job; the median is reported (default 3; quick 1)")
	pipe := fs.String("pipe-devices", "", "method-job fleet sizes over the in-memory transport (default 100000; quick 10000; with --peers 10000,100000, quick 2000,10000)")
	twin := fs.String("twin-devices", "", "twin-job fleet sizes (default 10000,100000,1000000; quick 10000)")
	qt := fs.Int("query-twins", 0, "twins the queries run over (default 1000000; quick 10000)")
	qruns := fs.Int("query-runs", 0, "runs of each query; the median is reported (default 3; quick 1)")
	startJobs := fs.Int("start-jobs", 0, "jobs due 50 ms apart for the start precision (default 100; quick 20)")
	importN := fs.Int("import-devices", 0, "devices created through the bulk registry API (default 1000000; quick 10000)")
	copyN := fs.Int("copy-devices", 0, "devices of the hub herd store copy copies (default 1000000; quick 10000)")
	stores := fs.String("stores", storeSQLite+","+storePostgres, "the stores to measure side by side: sqlite, postgres or both")
	pgURL := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES"), "a PostgreSQL server to measure on (a URL whose user may create databases; HERD_BENCH_POSTGRES); default: a server the harness starts from the system's binaries")
	defDir := os.Getenv("HERD_BENCH_DIR")
	if defDir == "" {
		defDir = filepath.Join(os.TempDir(), "herd-bench")
	}
	dir := fs.String("dir", defDir, "where fleet databases are built once and kept (HERD_BENCH_DIR)")
	peersRun := fs.Bool("peers", false, "measure Herd against its limits in one run: Debian's Mosquitto on a loopback port (same fleet), the round trips under a method job, the raw store under twin jobs and queries")
	clusterRun := fs.Bool("cluster", false, "measure cluster mode alone (PostgreSQL and an embedded NATS server): the cluster section, which the default run leaves out")
	clusterNodes := fs.Int("cluster-nodes", 0, "nodes of the cluster section, one process each (default 6; quick 3)")
	clusterDevices := fs.Int("cluster-devices", 0, "devices spread over the cluster's nodes (default 100000; quick 9000)")
	clusterTwin := fs.Int("cluster-twin-devices", 0, "registered devices (the connected ones and more) of the cluster's twin-update job (default 1000000; quick 20000)")
	only := fs.String("only", "", "run only these sections (comma-separated: "+strings.Join(sectionNames, ", ")+")")
	out := fs.String("out", "", "also write the report to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c := &config{quick: *quick, inflight: *inflight, dir: *dir, out: *out, postgres: *pgURL, sections: map[string]bool{}}
	pick := func(v, full, q int) int {
		switch {
		case v > 0:
			return v
		case *quick:
			return q
		}
		return full
	}
	c.gatewayDevices = pick(*gw, 10_000, 2_000)
	c.jobRuns = pick(*jobRuns, 3, 1)
	c.queryTwins = pick(*qt, 1_000_000, 10_000)
	c.queryRuns = pick(*qruns, 3, 1)
	c.startJobs = pick(*startJobs, 100, 20)
	c.importDevices = pick(*importN, 1_000_000, 10_000)
	c.copyDevices = pick(*copyN, 1_000_000, 10_000)
	c.clusterNodes = pick(*clusterNodes, 6, 3)
	c.clusterDevices = pick(*clusterDevices, 100_000, 9_000)
	c.clusterTwin = max(pick(*clusterTwin, 1_000_000, 20_000), c.clusterDevices)
	if c.clusterNodes < 2 {
		return nil, fmt.Errorf("--cluster-nodes %d: a cluster has at least 2 nodes", c.clusterNodes)
	}
	for _, st := range strings.Split(*stores, ",") {
		st = strings.TrimSpace(st)
		if st != storeSQLite && st != storePostgres {
			return nil, fmt.Errorf("--stores %q: the stores are sqlite and postgres", *stores)
		}
		if !contains(c.stores, st) {
			c.stores = append(c.stores, st)
		}
	}
	c.roundTrips = *rt
	if c.roundTrips <= 0 {
		c.roundTrips = 10 * time.Second
		if *quick {
			c.roundTrips = 3 * time.Second
		}
	}
	var err error
	pipeFull, pipeQuick := "100000", "10000"
	if *peersRun {
		// Two sizes: whether a device's cost stays flat as the job grows.
		pipeFull, pipeQuick = "10000,100000", "2000,10000"
	}
	if c.pipeDevices, err = sizes("--pipe-devices", *pipe, *quick, pipeFull, pipeQuick); err != nil {
		return nil, err
	}
	if c.twinDevices, err = sizes("--twin-devices", *twin, *quick, "10000,100000,1000000", "10000"); err != nil {
		return nil, err
	}
	switch {
	case *clusterRun && *peersRun:
		return nil, errors.New("--cluster and --peers are separate runs: give one")
	case *clusterRun:
		if *only != "" {
			return nil, errors.New("--cluster runs the cluster section alone: leave out --only")
		}
		c.sections["cluster"] = true
	case *peersRun:
		if *only != "" {
			return nil, errors.New("--peers runs its own sections: leave out --only")
		}
		for _, s := range peerSections {
			c.sections[s] = true
		}
	case *only == "":
		for _, s := range sectionNames {
			c.sections[s] = s != "cluster"
		}
	default:
		for _, s := range strings.Split(*only, ",") {
			s = strings.TrimSpace(s)
			if !contains(sectionNames, s) {
				return nil, fmt.Errorf("--only %q: sections are %s", s, strings.Join(sectionNames, ", "))
			}
			c.sections[s] = true
		}
	}
	if c.gatewayDevices > 18_000 {
		return nil, fmt.Errorf("--gateway-devices %d: one process holds at most ~19,000 sockets here; use --pipe-devices for larger fleets", c.gatewayDevices)
	}
	return c, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sizes(flagName, v string, quick bool, full, q string) ([]int, error) {
	if v == "" {
		v = full
		if quick {
			v = q
		}
	}
	var out []int
	for _, s := range strings.Split(v, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(s), &n); err != nil || n <= 0 {
			return nil, fmt.Errorf("%s %q: give positive numbers separated by commas", flagName, v)
		}
		out = append(out, n)
	}
	return out, nil
}

// run measures what the configuration asks and prints the report.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	r := newReport(cfg, args)
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }
	e := &bench{cfg: cfg, r: r, logf: logf}
	bs, closeStores, err := backends(ctx, e)
	if err != nil {
		return err
	}
	defer closeStores()
	e.backends = bs
	steps := []struct {
		name string
		fn   func(context.Context, *bench) error
	}{
		{"peers", benchPeers},
		{"gateway", benchGateway},
		{"methodjob", benchPipeJobs},
		{"twinjob", benchTwinJobs},
		{"query", benchQueries},
		{"import", benchImport},
		{"copy", benchCopy},
		{"start", benchStart},
		{"cluster", benchCluster},
	}
	for _, s := range steps {
		if !cfg.sections[s.name] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		logf("%s …", s.name)
		if err := s.fn(ctx, e); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		logf("%s done in %s", s.name, time.Since(start).Round(time.Second))
	}
	text := r.markdown()
	fmt.Fprint(stdout, text)
	if cfg.out != "" {
		return os.WriteFile(cfg.out, []byte(text), 0o644)
	}
	return nil
}
