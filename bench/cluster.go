package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/herd-iot/herd/bench/measure"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/sim"
	"github.com/herd-iot/herd/internal/store"
)

// The cluster section (go run ./bench --cluster): nodes of one cluster on
// one PostgreSQL database and an embedded NATS server. Node 0 runs in this
// process, so that the method round trips are timed through its method
// service; the other nodes are children (this program re-executed with
// roleEnv=node), each under the open-file limit of its own process, as
// are the fleets, one child per node. Each job runs on the node that
// takes its lease first; the failover job is created on the first child,
// and the node that holds it is killed (kill -9) for the failover figure.
const nodeEnv = "HERD_BENCH_NODE"

// nodeSpec is a node child's configuration.
type nodeSpec struct {
	Dir    string `json:"dir"`
	Store  string `json:"store"`
	NATS   string `json:"nats"`
	NodeID string `json:"nodeId"`
	Lease  string `json:"lease"`
}

// nodeReply is a node child's answer to one command; the first line it
// writes (no command) gives its address.
type nodeReply struct {
	MQTTPlain string `json:"mqttPlain,omitempty"`
	RSSKB     int64  `json:"rssKB"`
	Err       string `json:"err,omitempty"`
}

// nodeMain runs a node child: a hub in cluster mode until "quit" or the
// end of stdin. "state" answers its settled RSS; "job ID BODY" creates a
// job through it.
func nodeMain(stdin io.Reader, stdout io.Writer) error {
	b, err := os.ReadFile(os.Getenv(nodeEnv))
	if err != nil {
		return err
	}
	var spec nodeSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	ctx := context.Background()
	h, err := runHubWith(ctx, spec.Dir, spec.Store, true, func(c *hub.Config) {
		c.NATS, c.NodeID = spec.NATS, spec.NodeID
		c.NodeLease, _ = time.ParseDuration(spec.Lease)
	})
	if err != nil {
		return err
	}
	defer h.cancel()
	out := json.NewEncoder(stdout)
	if err := out.Encode(nodeReply{MQTTPlain: h.MQTTPlainAddr().String()}); err != nil {
		return err
	}
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		var r nodeReply
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "state":
			r.RSSKB = measure.SettledRSS()
		case strings.HasPrefix(line, "job "):
			id, body, _ := strings.Cut(strings.TrimPrefix(line, "job "), " ")
			if _, err := h.Jobs.Create(ctx, id, []byte(body), nil); err != nil {
				r.Err = err.Error()
			}
		case line == "quit":
			h.cancel()
			if err := <-h.done; err != nil {
				r.Err = err.Error()
			}
			return out.Encode(r)
		default:
			r.Err = fmt.Sprintf("unknown command %q", sc.Text())
		}
		if err := out.Encode(r); err != nil {
			return err
		}
	}
	return sc.Err()
}

// nodeProc is a node child as this process drives it.
type nodeProc struct {
	id  string
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
	mu  sync.Mutex
	// mqtt is its plain MQTT address.
	mqtt string
}

func startNode(dir string, spec nodeSpec) (*nodeProc, error) {
	cmd, in, out, err := startChild(filepath.Join(dir, spec.NodeID+".json"), "node", nodeEnv, spec)
	if err != nil {
		return nil, err
	}
	n := &nodeProc{id: spec.NodeID, cmd: cmd, in: in, out: out}
	var first nodeReply
	if err := n.out.Decode(&first); err != nil {
		n.kill()
		return nil, fmt.Errorf("node %s did not start: %w", spec.NodeID, err)
	}
	n.mqtt = first.MQTTPlain
	return n, nil
}

func (n *nodeProc) do(command string) (nodeReply, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := fmt.Fprintln(n.in, command); err != nil {
		return nodeReply{}, err
	}
	var r nodeReply
	if err := n.out.Decode(&r); err != nil {
		return r, fmt.Errorf("node %s %s: %w", n.id, command, err)
	}
	if r.Err != "" {
		return r, fmt.Errorf("node %s %s: %s", n.id, command, r.Err)
	}
	return r, nil
}

func (n *nodeProc) kill() {
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
}

// stop ends the node gracefully if it answers, else kills it.
func (n *nodeProc) stop() {
	done := make(chan struct{})
	go func() {
		_, _ = n.do("quit")
		close(done)
	}()
	select {
	case <-done:
		n.in.Close()
		_ = n.cmd.Wait()
	case <-time.After(30 * time.Second):
		n.kill()
	}
}

// startNATS runs a NATS server in this process on a free loopback port.
func startNATS() (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: 8 << 20})
	if err != nil {
		return nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("the NATS server is not ready within 10 s")
	}
	return ns, nil
}

// benchCluster measures a cluster of cfg.clusterNodes nodes with
// cfg.clusterDevices devices spread evenly over them.
func benchCluster(ctx context.Context, e *bench) error {
	cfg, r, logf := e.cfg, e.r, e.logf
	var b *backend
	for _, x := range e.backends {
		if x.kind == storePostgres {
			b = x
		}
	}
	if b == nil {
		return errors.New("cluster mode runs on PostgreSQL: give --stores postgres (or both)")
	}
	k, n := cfg.clusterNodes, cfg.clusterDevices
	if n/k > 18_000 {
		return fmt.Errorf("%d devices over %d nodes is more than a process may hold here (~18,000 each): give more --cluster-nodes", n, k)
	}
	ns, err := startNATS()
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	dir, err := os.MkdirTemp("", "herd-bench-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dbName, err := b.pg.create(ctx, "")
	if err != nil {
		return err
	}
	defer func() { _ = b.pg.drop(context.Background(), dbName) }()
	u := b.pg.url(dbName)
	const lease = "15s" // the default: the failover figure is the one users get

	var children []*nodeProc
	defer func() {
		for _, c := range children {
			c.stop()
		}
	}()
	logf("starting %d nodes (1 in this process) on PostgreSQL and NATS", k)
	for i := 1; i < k; i++ {
		nd := filepath.Join(dir, fmt.Sprintf("node-%d", i))
		c, err := startNode(dir, nodeSpec{Dir: nd, Store: u, NATS: ns.ClientURL(), NodeID: fmt.Sprintf("node-%d", i), Lease: lease})
		if err != nil {
			return err
		}
		children = append(children, c)
	}
	h0, err := runHubWith(ctx, filepath.Join(dir, "node-0"), u, true, func(c *hub.Config) {
		c.NATS, c.NodeID = ns.ClientURL(), "node-0"
		c.NodeLease, _ = time.ParseDuration(lease)
	})
	if err != nil {
		return err
	}
	defer h0.stop()
	ids, err := register(ctx, h0, "cl-", n)
	if err != nil {
		return err
	}
	per := make([][]sim.Identity, k)
	for i, id := range ids {
		per[i%k] = append(per[i%k], id)
	}
	addrs := []string{h0.MQTTPlainAddr().String()}
	for _, c := range children {
		addrs = append(addrs, c.mqtt)
	}
	var fleets []*fleetProc
	defer func() {
		for _, f := range fleets {
			f.close()
		}
	}()
	for i := range k {
		fd := filepath.Join(dir, fmt.Sprintf("fleet-%d", i))
		if err := os.MkdirAll(fd, 0o700); err != nil {
			return err
		}
		f, err := startFleet(fd, fleetSpec{Host: h0.Hostname(), Addr: addrs[i], Concurrency: 256, Devices: per[i]})
		if err != nil {
			return err
		}
		fleets = append(fleets, f)
	}
	base := make([]int64, len(children))
	for i, c := range children {
		st, err := c.do("state")
		if err != nil {
			return err
		}
		base[i] = st.RSSKB
	}

	logf("connecting %d devices to %d nodes (one fleet process per node, 256 in flight each)", n, k)
	began := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, k)
	for i, f := range fleets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.do("connect")
		}()
	}
	wg.Wait()
	took := time.Since(began)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	scale := fmt.Sprintf("%s devices, %d nodes", count(n), k)
	r.add(row{what: fmt.Sprintf("cluster: SAS-authenticated first connects over plain MQTT, all nodes at once (%d fleet processes)", k), store: b.Name(), scale: scale,
		measured: fmt.Sprintf("**%s/s** (%s)", count(int(float64(n)/took.Seconds())), seconds(took)), target: "—"})
	time.Sleep(3 * time.Second) // the batched connection-state writes are done
	var grew, held int64
	for i, c := range children {
		st, err := c.do("state")
		if err != nil {
			return err
		}
		grew += st.RSSKB - base[i]
		held += int64(len(per[i+1]))
	}
	r.add(row{what: "cluster: node RSS per idle connected device (the child nodes, plain MQTT)", store: b.Name(), scale: scale,
		measured: fmt.Sprintf("**%.1f KB**", float64(grew)/float64(held)), target: "≤ 10 KB"})

	var elsewhere []sim.Identity
	for _, p := range per[1:] {
		elsewhere = append(elsewhere, p...)
	}
	logf("method round trips from node-0 for %s each, %d in flight: to its own devices, then to the other nodes'", cfg.roundTrips, cfg.inflight)
	here := measure.MeasureRoundTrips(ctx, h0.Methods, per[0], cfg.roundTrips, cfg.inflight)
	there := measure.MeasureRoundTrips(ctx, h0.Methods, elsewhere, cfg.roundTrips, cfg.inflight)
	for _, x := range []struct {
		what string
		rt   measure.RoundTrips
	}{{"to devices on the same node", here}, {"to devices on other nodes (through NATS)", there}} {
		r.add(row{what: fmt.Sprintf("cluster: direct-method round trips %s, %d in flight", x.what, cfg.inflight), store: b.Name(), scale: scale,
			measured: fmt.Sprintf("**%s/s**, p50 %s, p99 %s, %d errors", count(int(x.rt.Rate)), seconds(x.rt.P50), seconds(x.rt.P99), x.rt.Errors), target: "—"})
	}

	logf("method job over %d devices, created on node-0, run by the node that takes its lease", n)
	body := `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"},"responseTimeoutInSeconds":30}}`
	times, err := jobRuns(ctx, h0, 1, n, "cluster-method", body)
	if err != nil {
		return err
	}
	r.add(row{what: "cluster: method job over every node's devices, created on node-0, every outcome persisted", store: b.Name(), scale: scale,
		measured: rate(n, times), target: "≥ 15,000 devices/s (100k, 6 nodes)", n: n})

	if os.Getenv(profileEnv) != "" {
		logf("failover left out: %s is set (a killed node writes no profile)", profileEnv)
	} else if err := failover(ctx, e, b, h0, children, n, scale); err != nil {
		return err
	}
	return clusterTwinJob(ctx, e, b, h0, n, k)
}

// clusterTwinJob runs a twin-update job over the connected devices and as
// many more registered only (--cluster-twin-devices), after the failover
// (its queryCondition * would take them in): set-based SQL on the node
// that runs the job; the connected devices are told on their nodes.
func clusterTwinJob(ctx context.Context, e *bench, b *backend, h0 *benchHub, n, k int) error { // n: the fleets' devices
	cfg, r, logf := e.cfg, e.r, e.logf
	if extra := cfg.clusterTwin - n; extra > 0 {
		logf("registering %d more devices (not connected) for the twin-update job", extra)
		if _, err := register(ctx, h0, "cl-twin-", extra); err != nil {
			return err
		}
	}
	logf("twin-update job over %d registered devices, created on node-0", cfg.clusterTwin)
	times, err := jobRuns(ctx, h0, 1, cfg.clusterTwin, "cluster-twin", twinJobBody)
	if err != nil {
		return err
	}
	r.add(row{what: "cluster: twin-update job (a tag and a desired property on every twin), created on node-0, start → `completed`; the devices still connected after the failover told on their nodes",
		store: b.Name(), scale: fmt.Sprintf("%s registered devices, %d nodes", count(cfg.clusterTwin), k),
		measured: fmt.Sprintf("**%s** (%s devices/s)", seconds(times[0]), count(int(float64(cfg.clusterTwin)/times[0].Seconds()))), target: "—", n: cfg.clusterTwin})
	return nil
}

// failover kills the node that runs a method job (the holder of its
// lease) in the middle of it and measures how long the job stands still
// before another node runs it. The job is created on the first child,
// which hears of it first and so most likely takes it: node-0 runs in
// this process and cannot be killed.
func failover(ctx context.Context, e *bench, b *backend, h0 *benchHub, children []*nodeProc, n int, scale string) error {
	// Paced to last at least 8 s, so that the kill comes in its middle
	// (a cap above what the cluster does at scale).
	body := fmt.Sprintf(`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor","responseTimeoutInSeconds":30},`+
		`"herd":{"rollout":{"maxPerMinute":%d}}}`, max(n*60/8, 60))
	if rep, err := children[0].do("job cluster-failover " + body); err != nil || rep.Err != "" {
		return fmt.Errorf("create the failover job on %s: %v %s", children[0].id, err, rep.Err)
	}
	var holder *nodeProc
	for deadline := time.Now().Add(time.Minute); holder == nil; {
		r, err := h0.Store.Job(ctx, "cluster-failover")
		if err != nil {
			return err
		}
		if r.Lease.HeldAt(time.Now()) {
			if r.Lease.Node == "node-0" {
				return errors.New("failover: node-0, which runs in this process, took the failover job: it cannot be killed")
			}
			for _, c := range children {
				if c.id == r.Lease.Node {
					holder = c
				}
			}
		}
		if holder == nil && time.Now().After(deadline) {
			return errors.New("failover: no node took the failover job within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.logf("failover: kill -9 of %s, which runs the job, in the middle of it", holder.id)
	done := func() (int64, error) {
		j, err := h0.Jobs.Get(ctx, "cluster-failover")
		if err != nil {
			return 0, err
		}
		st := j.DeviceJobStatistics
		return st.SucceededCount + st.FailedCount, nil
	}
	for {
		d, err := done()
		if err != nil {
			return err
		}
		if d == int64(n) {
			return errors.New("the failover job ended before the kill")
		}
		if d >= int64(n)/5 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	holder.kill()
	killed := time.Now()
	time.Sleep(200 * time.Millisecond) // outcomes committed as it died are counted now
	before, err := done()
	if err != nil {
		return err
	}
	for {
		d, err := done()
		if err != nil {
			return err
		}
		if d > before {
			break
		}
		if time.Since(killed) > 2*time.Minute {
			return errors.New("no node took the job over within 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	gap := time.Since(killed)
	j, err := waitJobEnded(ctx, h0, "cluster-failover")
	if err != nil {
		return err
	}
	st := j.DeviceJobStatistics
	e.r.add(row{what: "cluster: failover, kill -9 of the node running a method job → the job progressing again on another node (lease 15 s)", store: b.Name(), scale: scale,
		measured: fmt.Sprintf("**%s** (the job then %s: %d succeeded, %d failed — the killed node's devices)", seconds(gap), j.Status, st.SucceededCount, st.FailedCount),
		target:   "≤ 15 s"})
	return nil
}

// runHubWith is runHubIn with changes to the configuration.
func runHubWith(ctx context.Context, dir, spec string, plain bool, change func(*hub.Config)) (*benchHub, error) {
	cfg := hub.Default()
	cfg.DataDir = dir
	cfg.HTTPSAddr = "127.0.0.1:0"
	cfg.MQTTAddr = ""
	if plain {
		cfg.MQTTPlainAddr = "127.0.0.1:0"
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if change != nil {
		change(&cfg)
	}
	var err error
	if cfg.Store, err = store.Open(ctx, spec, dir); err != nil {
		return nil, err
	}
	h, err := hub.New(ctx, cfg) // closes the store if it fails
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b := &benchHub{Hub: h, dir: dir, cancel: cancel, done: make(chan error, 1), cleanup: func() {}}
	go func() { b.done <- h.Run(hctx) }()
	return b, nil
}
