package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// clusterNode is one `herd serve --nats` process of a test cluster.
type clusterNode struct {
	id          string
	proc        served
	rest, mqtt  string // host:port
	connections string // iothubowner
}

// testCluster is nodes on one PostgreSQL database and an embedded NATS
// server; every node presents node-0's server certificate, trusted by ca.
type testCluster struct {
	t     *testing.T
	bin   string
	nats  string
	store string
	dir0  string
	ca    string // the CA file every client trusts
	lease string
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir0 := t.TempDir()
	// Cluster mode runs on PostgreSQL, whatever HERD_TEST_STORE says.
	return &testCluster{t: t, bin: buildHerd(t), nats: hubtest.NATS(t), store: pgtest.URL(t), dir0: dir0,
		ca: filepath.Join(dir0, certs.CAFile), lease: "3s"}
}

var (
	restLine = regexp.MustCompile(`REST API +https://\S+ \(listening on (\S+)\)`)
	mqttLine = regexp.MustCompile(`MQTT \(TLS\) +(\S+) `)
)

// start starts node i (node-0 makes the certificates the others use).
func (c *testCluster) start(i int) *clusterNode {
	c.t.Helper()
	id := fmt.Sprintf("node-%d", i)
	dir := c.dir0
	args := []string{"--store", c.store, "--nats", c.nats, "--node-id", id, "--node-lease", c.lease}
	if i > 0 {
		dir = filepath.Join(c.dir0, id)
		args = append(args, "--tls-cert", filepath.Join(c.dir0, "server.pem"), "--tls-key", filepath.Join(c.dir0, "server-key.pem"))
	}
	n := &clusterNode{id: id, proc: serveProcess(c.t, c.bin, dir, args...)}
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out = n.proc.stdout.String()
		if i := strings.Index(out, "Service connection string (iothubowner):"); i >= 0 && strings.Count(out[i:], "\n") >= 2 {
			n.connections = strings.TrimSpace(strings.Split(out[i:], "\n")[1])
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: no banner: %s", id, out)
		}
	}
	if m := restLine.FindStringSubmatch(out); m != nil {
		n.rest = m[1]
	}
	if m := mqttLine.FindStringSubmatch(out); m != nil {
		n.mqtt = m[1]
	}
	if n.rest == "" || n.mqtt == "" {
		c.t.Fatalf("%s: addresses not in the banner: %s", id, out)
	}
	return n
}

// client is a service client of node n.
func (c *testCluster) client(n *clusterNode) *service.Client {
	c.t.Helper()
	_, port, _ := strings.Cut(n.rest, ":")
	cl, err := service.New(n.connections, service.WithCAFile(c.ca), service.WithEndpoint("https://localhost:"+port))
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// connect connects a device to node n, answering "ping" with its id.
func (c *testCluster) connect(n *clusterNode, d *herd.Device, calls *sync.Map) *device.Client {
	c.t.Helper()
	cs := sas.ConnectionString{HostName: "localhost", DeviceID: d.DeviceID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
	ca, err := os.ReadFile(c.ca)
	if err != nil {
		c.t.Fatal(err)
	}
	dc, err := device.New(cs.String(), device.WithCA(ca), device.WithAddress(n.mqtt))
	if err != nil {
		c.t.Fatal(err)
	}
	dc.OnMethod("ping", func(context.Context, json.RawMessage) (int, any) {
		v, _ := calls.LoadOrStore(d.DeviceID, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		return 200, map[string]string{"device": d.DeviceID}
	})
	if err := dc.Connect(context.Background()); err != nil {
		c.t.Fatalf("connect %s to %s: %v", d.DeviceID, n.id, err)
	}
	c.t.Cleanup(func() { dc.Close() })
	return dc
}

// TestClusterOfProcesses runs three `herd serve` processes on one
// database and one NATS server: a method from one node's REST API reaches
// a device on another; the node running the jobs is killed (kill -9) in
// the middle of a method job and another node finishes it; the devices
// of a killed node show Disconnected within its lease.
func TestClusterOfProcesses(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t)
	n0 := c.start(0)
	n1 := c.start(1)
	n2 := c.start(2)
	admin := c.client(n2)
	st, err := admin.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 {
		t.Fatalf("cluster status: %+v", st)
	}

	var calls sync.Map
	var devs []*herd.Device
	for i := range 6 {
		d, err := admin.CreateDevice(ctx, herd.Device{DeviceID: fmt.Sprintf("dev-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	// dev-0..2 on node-1, dev-3..5 on node-2.
	for i, d := range devs {
		c.connect([]*clusterNode{n1, n2}[i/3], d, &calls)
	}
	res, err := c.client(n0).InvokeMethod(ctx, "dev-4", herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 || !strings.Contains(string(res.Payload), "dev-4") {
		t.Fatalf("a method from node-0 to a device on node-2: %+v %v", res, err)
	}

	// A method job, created on node-1, run by whichever node takes its
	// lease.
	if _, err := c.client(n1).ScheduleDeviceMethod(ctx, "first", "*", herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10},
		service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	j, err := admin.WaitJob(wctx, "first", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := j.DeviceJobStatistics; j.Status != herd.JobCompleted || s.SucceededCount != 6 {
		t.Fatalf("the first job: %s %+v", j.Status, *s)
	}

	// node-0, the first started and so the leader, is killed; a job
	// scheduled meanwhile runs on one of the others.
	n0.proc.Process.Kill()
	n0.proc.Wait()
	if _, err := admin.ScheduleDeviceMethod(ctx, "after-kill", "*", herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10},
		service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	j, err = admin.WaitJob(wctx, "after-kill", nil)
	if err != nil {
		t.Fatalf("the job after node-0 was killed: %v", err)
	}
	if s := j.DeviceJobStatistics; j.Status != herd.JobCompleted || s.SucceededCount != 6 {
		t.Fatalf("the job after node-0 was killed: %s %+v", j.Status, *s)
	}
	// The cluster status names the node that leads now.
	var runs []string
	hubtest.Eventually(t, 20*time.Second, func() bool {
		st, err := admin.Cluster(ctx)
		if err != nil {
			return false
		}
		runs = runs[:0]
		for _, n := range st.Nodes {
			if n.Leader && n.State == herd.NodeAlive {
				runs = append(runs, n.NodeID)
			}
		}
		return len(runs) == 1 && runs[0] != "node-0"
	}, "the cluster status does not name one alive node leading: %v", &runs)
	for _, d := range devs {
		want := int64(2) // once per job, and dev-4 once more
		if d.DeviceID == "dev-4" {
			want = 3
		}
		v, _ := calls.Load(d.DeviceID)
		if n, _ := v.(*atomic.Int64); n == nil || n.Load() != want {
			t.Errorf("%s ran the method %v times, want %d", d.DeviceID, n, want)
		}
	}

	// node-2 is killed: its devices show Disconnected on node-1 within the
	// lease (3 s) and a few renewals.
	n2.proc.Process.Kill()
	n2.proc.Wait()
	c1 := c.client(n1)
	hubtest.Eventually(t, 20*time.Second, func() bool {
		for i, d := range devs {
			got, err := c1.GetDevice(ctx, d.DeviceID)
			if err != nil {
				return false
			}
			if want := i < 3; (got.ConnectionState == herd.Connected) != want {
				return false
			}
		}
		return true
	}, "the devices of the killed node-2 are not all Disconnected (and node-1's all Connected)")
	if _, err := c1.InvokeMethod(ctx, "dev-5", herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 5}); !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Errorf("a method to a device of the killed node: %v, want DeviceNotOnline", err)
	}
}

// clusterJob returns a job as GET /cluster shows it, nil if it does not
// (ended) or the status cannot be read.
func clusterJob(ctx context.Context, c *service.Client, id string) *herd.ClusterJob {
	st, err := c.Cluster(ctx)
	if err != nil {
		return nil
	}
	for _, j := range st.Jobs {
		if j.JobID == id {
			return j
		}
	}
	return nil
}

// jobHolder waits until GET /cluster names the node that runs a job.
func jobHolder(t *testing.T, c *service.Client, id string) *herd.ClusterJob {
	t.Helper()
	var j *herd.ClusterJob
	hubtest.Eventually(t, 30*time.Second, func() bool {
		j = clusterJob(context.Background(), c, id)
		return j != nil && j.NodeID != ""
	}, "no node holds job %s", id)
	return j
}

// lazy formats as what it returns, when formatted (a failure message's
// state at the failure).
type lazy func() string

func (l lazy) String() string { return l() }
