package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
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
	nodes := []*clusterNode{c.start(0), c.start(1), c.start(2)}
	lb := newBalancer(t)
	for _, n := range nodes {
		lb.set(n.id, n.mqtt)
	}
	const n = 60
	ca, err := os.ReadFile(c.ca)
	if err != nil {
		t.Fatal(err)
	}
	var calls sync.Map
	connect := func(d *herd.Device) {
		t.Helper()
		cs := sas.ConnectionString{HostName: "localhost", DeviceID: d.DeviceID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
		dc, err := device.New(cs.String(), device.WithCA(ca), device.WithAddress(lb.l.Addr().String()))
		if err != nil {
			t.Fatal(err)
		}
		dc.OnMethod("ping", func(context.Context, json.RawMessage) (int, any) {
			v, _ := calls.LoadOrStore(d.DeviceID, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			time.Sleep(300 * time.Millisecond) // calls are in flight when a node drains
			return 200, nil
		})
		if err := dc.Connect(ctx); err != nil {
			t.Fatalf("connect %s: %v", d.DeviceID, err)
		}
		t.Cleanup(func() { dc.Close() })
	}
	admin := c.client(nodes[1])
	var late *herd.Device
	for i := range n + 1 {
		d, err := admin.CreateDevice(ctx, herd.Device{DeviceID: fmt.Sprintf("dev-%02d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if i == n {
			late = d
			break
		}
		connect(d)
	}
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
	connect(late)
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
				var called int64
				if v, ok := calls.Load(d.DeviceID); ok {
					called = v.(*atomic.Int64).Load()
				}
				t.Logf("not completed: %s (called %d times): %s %+v", d.DeviceID, called, d.Status, d.Error)
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
		v, _ := calls.Load(id)
		if got, _ := v.(*atomic.Int64); got == nil || got.Load() != 1 {
			t.Errorf("%s ran the method %v times, want 1", id, got)
		}
	}
}
