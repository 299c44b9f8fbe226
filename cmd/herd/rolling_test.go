package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// balancer is a TCP load balancer on loopback, as HAProxy in front of a
// cluster's MQTT ports: each connection goes to the next backend in turn
// that accepts it.
type balancer struct {
	l        net.Listener
	mu       sync.Mutex
	backends map[string]string // node id → host:port
	next     int
	conns    map[net.Conn]struct{}
}

func newBalancer(t *testing.T) *balancer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{l: l, backends: map[string]string{}, conns: map[net.Conn]struct{}{}}
	go b.serve()
	t.Cleanup(func() {
		l.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for c := range b.conns {
			c.Close()
		}
	})
	return b
}

// set points the balancer's backend id at addr.
func (b *balancer) set(id, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends[id] = addr
}

func (b *balancer) serve() {
	for {
		c, err := b.l.Accept()
		if err != nil {
			return
		}
		go b.proxy(c)
	}
}

// track adds (or removes) a connection to close at the end.
func (b *balancer) track(c net.Conn, add bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if add {
		b.conns[c] = struct{}{}
	} else {
		delete(b.conns, c)
	}
}

func (b *balancer) proxy(c net.Conn) {
	b.track(c, true)
	defer b.track(c, false)
	defer c.Close()
	b.mu.Lock()
	ids := make([]string, 0, len(b.backends))
	for id := range b.backends {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	addrs := make([]string, len(ids))
	for i := range ids {
		addrs[i] = b.backends[ids[(b.next+i)%len(ids)]]
	}
	b.next++
	b.mu.Unlock()
	for _, a := range addrs {
		up, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err != nil {
			continue // down or not accepting: the next one
		}
		b.track(up, true)
		defer b.track(up, false)
		done := make(chan struct{}, 2)
		go func() { io.Copy(up, c); done <- struct{}{} }()
		go func() { io.Copy(c, up); done <- struct{}{} }()
		<-done
		up.Close()
		return
	}
}

// startBehindBalancer starts nodes 0 … n-1 and a balancer in front of
// their MQTT ports.
func (c *testCluster) startBehindBalancer(n int) ([]*clusterNode, *balancer) {
	c.t.Helper()
	lb := newBalancer(c.t)
	var nodes []*clusterNode
	for i := range n {
		nd := c.start(i)
		lb.set(nd.id, nd.mqtt)
		nodes = append(nodes, nd)
	}
	return nodes, lb
}

// pingFleet is test devices that answer "ping" after a pause and count
// the calls they got.
type pingFleet struct {
	t     *testing.T
	ca    []byte
	pause time.Duration
	calls sync.Map // device id → *atomic.Int64
	// extra is calls made to a device outside the job checkJob checks.
	extra map[string]int64
}

func newPingFleet(t *testing.T, c *testCluster, pause time.Duration) *pingFleet {
	t.Helper()
	ca, err := os.ReadFile(c.ca)
	if err != nil {
		t.Fatal(err)
	}
	return &pingFleet{t: t, ca: ca, pause: pause, extra: map[string]int64{}}
}

// register creates devices dev-00 … dev-(n-1) and connects them to addr,
// and creates dev-n, the late device, which it returns unconnected.
func (f *pingFleet) register(admin *service.Client, n int, addr string) *herd.Device {
	f.t.Helper()
	for i := range n + 1 {
		d, err := admin.CreateDevice(context.Background(), herd.Device{DeviceID: fmt.Sprintf("dev-%02d", i)})
		if err != nil {
			f.t.Fatal(err)
		}
		if i == n {
			return d
		}
		f.connect(d, addr)
	}
	return nil
}

// checkJob waits for a method job over devices devices to end and checks
// that it completed with every device done once: none ran the method
// twice, a completed one ran it once, and the only failures are calls
// whose outcome an event (what) may have lost (MethodInterrupted,
// GatewayTimeout); late, connected last, completed. It returns the job's
// statistics.
func (f *pingFleet) checkJob(admin *service.Client, jobID string, devices int, late, what string) herd.DeviceJobStatistics {
	t := f.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	j, err := admin.WaitJob(ctx, jobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := *j.DeviceJobStatistics
	if j.Status != herd.JobCompleted || st.SucceededCount+st.FailedCount != int64(devices) {
		t.Fatalf("after %s: %s %+v", what, j.Status, st)
	}
	for page, err := range admin.Query(ctx, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '"+jobID+"'") {
		if err != nil {
			t.Fatal(err)
		}
		djs, _ := page.DeviceJobs()
		for _, d := range djs {
			called := f.called(d.DeviceID) - f.extra[d.DeviceID]
			switch {
			case called > 1:
				t.Errorf("%s ran the job's method %d times", d.DeviceID, called)
			case d.Status == herd.DeviceJobCompleted && called != 1:
				t.Errorf("%s completed, called %d times", d.DeviceID, called)
			case d.Status == herd.DeviceJobFailed && d.Error.Code != "MethodInterrupted" && d.Error.Code != string(herd.ErrGatewayTimeout):
				t.Errorf("%s failed: %+v (only a call whose outcome %s lost may fail)", d.DeviceID, d.Error, what)
			case d.Status == herd.DeviceJobFailed:
				t.Logf("%s failed: %+v", d.DeviceID, d.Error)
			}
			if d.DeviceID == late && d.Status != herd.DeviceJobCompleted {
				t.Errorf("the device that connected after %s: %s %+v", what, d.Status, d.Error)
			}
		}
	}
	return st
}

// connect connects d to the MQTT address addr (a node or a balancer).
func (f *pingFleet) connect(d *herd.Device, addr string) {
	f.t.Helper()
	cs := sas.ConnectionString{HostName: "localhost", DeviceID: d.DeviceID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
	dc, err := device.New(cs.String(), device.WithCA(f.ca), device.WithAddress(addr))
	if err != nil {
		f.t.Fatal(err)
	}
	dc.OnMethod("ping", func(context.Context, json.RawMessage) (int, any) {
		v, _ := f.calls.LoadOrStore(d.DeviceID, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		time.Sleep(f.pause)
		return 200, nil
	})
	if err := dc.Connect(context.Background()); err != nil {
		f.t.Fatalf("connect %s: %v", d.DeviceID, err)
	}
	f.t.Cleanup(func() { dc.Close() })
}

// called is how many calls device id got.
func (f *pingFleet) called(id string) int64 {
	if v, ok := f.calls.Load(id); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// TestRollingRestart restarts every node of a 3-node cluster in turn
// (SIGTERM, then a new process with the same id) while a method job with
// connectTimeoutInSeconds runs over devices behind a load balancer: each
// node drains (its calls in flight finish, the jobs move to another node,
// its devices reconnect to the others), and no device fails or runs the
// method twice. One device connects only after the last restart, so that
// the job is running through all of them.
func TestRollingRestart(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t)
	nodes, lb := c.startBehindBalancer(3)
	const n = 60
	f := newPingFleet(t, c, 300*time.Millisecond) // calls are in flight when a node drains
	admin := c.client(nodes[1])
	late := f.register(admin, n, lb.l.Addr().String())
	// 10 devices a second: the calls go on through the restarts.
	if _, err := admin.ScheduleDeviceMethod(ctx, "rolling", "*",
		herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10, ConnectTimeoutInSeconds: 120},
		service.JobOptions{Herd: &herd.JobOptions{Rollout: &herd.Rollout{MaxPerMinute: 600}}}); err != nil {
		t.Fatal(err)
	}
	var stopped []*clusterNode
	for i, old := range nodes {
		stopped = append(stopped, old)
		// The test's service client talks to a node that stays up.
		other := c.client(nodes[(i+1)%len(nodes)])
		j, err := other.GetJob(ctx, "rolling")
		if err != nil {
			t.Fatal(err)
		}
		if j.EndTime != nil {
			t.Fatalf("the job ended before %s was restarted: %s %+v", old.id, j.Status, *j.DeviceJobStatistics)
		}
		t.Logf("restarting %s: %+v", old.id, *j.DeviceJobStatistics)
		if err := old.proc.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- old.proc.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("%s after SIGTERM: %v\n%s", old.id, err, old.proc.stderr.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not exit within 60 s of SIGTERM", old.id)
		}
		nodes[i] = c.start(i)
		lb.set(nodes[i].id, nodes[i].mqtt)
	}
	f.connect(late, lb.l.Addr().String())
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	j, err := c.client(nodes[2]).WaitJob(wctx, "rolling", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := j.DeviceJobStatistics; j.Status != herd.JobCompleted || s.SucceededCount != n+1 || s.FailedCount != 0 {
		for page, err := range c.client(nodes[2]).Query(ctx, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'rolling' AND devices.jobs.status != 'completed'") {
			if err != nil {
				t.Log(err)
				break
			}
			djs, _ := page.DeviceJobs()
			for _, d := range djs {
				t.Logf("not completed: %s (called %d times): %s %+v", d.DeviceID, f.called(d.DeviceID), d.Status, d.Error)
			}
		}
		for _, p := range stopped {
			t.Logf("%s (stopped) logged:\n%s", p.id, p.proc.stderr.String())
		}
		for _, p := range nodes {
			t.Logf("%s logged:\n%s", p.id, p.proc.stderr.String())
		}
		t.Fatalf("after the rolling restart: %s %+v", j.Status, *s)
	}
	for i := range n + 1 {
		id := fmt.Sprintf("dev-%02d", i)
		if got := f.called(id); got != 1 {
			t.Errorf("%s ran the method %d times, want 1", id, got)
		}
	}
}

// TestKillJobNodeAndDeviceNode kills (kill -9) the node running a method
// job (the holder of its lease) and another node holding devices at the
// same moment: the last node takes the job over at a higher epoch, the killed nodes' devices reconnect to it through
// the balancer, and the job ends with every device done once. The only
// failures are the calls in flight on the killed nodes, recorded
// MethodInterrupted or GatewayTimeout (their outcome was lost); no method
// runs twice. One device connects only after the kill.
func TestKillJobNodeAndDeviceNode(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t)
	nodes, lb := c.startBehindBalancer(3)
	const n = 30
	f := newPingFleet(t, c, 200*time.Millisecond)
	admin := c.client(nodes[2])
	late := f.register(admin, n, lb.l.Addr().String())
	if _, err := admin.ScheduleDeviceMethod(ctx, "kill-two", "*",
		herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10, ConnectTimeoutInSeconds: 120},
		service.JobOptions{Herd: &herd.JobOptions{Rollout: &herd.Rollout{MaxPerMinute: 300}}}); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 30*time.Second, func() bool {
		j, err := admin.GetJob(ctx, "kill-two")
		return err == nil && j.DeviceJobStatistics.SucceededCount >= 5
	}, "the job does not run")
	// The node holding the job's lease and one other node (each holds a
	// third of the devices) are killed; the third takes the job over.
	holder := jobHolder(t, admin, "kill-two")
	// herd cluster status names it under the nodes.
	out, err := runCLI(t, envOf(nil), "cluster", "status", "--connection-string", nodes[2].connections, "--ca", c.ca,
		"--url", "https://localhost:"+strings.Split(nodes[2].rest, ":")[1])
	if err != nil || !regexp.MustCompile(`(?m)^kill-two\s+scheduleDeviceMethod\s+running\s+`+holder.NodeID+`\s+\S+\s+\d+\s*$`).MatchString(out) {
		t.Fatalf("herd cluster status while %s runs kill-two: %v\n%s", holder.NodeID, err, out)
	}
	var killed []*clusterNode
	var survivor *clusterNode
	for _, k := range nodes {
		if k.id == holder.NodeID {
			killed = append(killed, k)
		}
	}
	for _, k := range nodes {
		switch {
		case k.id == holder.NodeID:
		case len(killed) < 2:
			killed = append(killed, k)
		default:
			survivor = k
		}
	}
	admin = c.client(survivor)
	for _, k := range killed {
		k.proc.Process.Kill()
	}
	for _, k := range killed {
		k.proc.Wait()
	}
	var now *herd.ClusterJob
	hubtest.Eventually(t, 30*time.Second, func() bool {
		now = clusterJob(ctx, admin, "kill-two")
		return now != nil && now.NodeID == survivor.id && now.LeaseEpoch > holder.LeaseEpoch
	}, "%s does not take the job over from %s (epoch %d): the job is %v\n%s logged:\n%s", survivor.id, holder.NodeID, holder.LeaseEpoch,
		lazy(func() string { return fmt.Sprintf("%+v", now) }), survivor.id, lazy(survivor.proc.stderr.String))
	f.connect(late, lb.l.Addr().String())
	st := f.checkJob(admin, "kill-two", n+1, late.DeviceID, "the kill")
	if st.FailedCount > 10 {
		t.Errorf("%d devices failed: more than the calls the killed nodes could have had in flight at 5 a second", st.FailedCount)
	}
}
