package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// startNodes starts n nodes of a cluster on one PostgreSQL database and
// an embedded NATS server, node-0 first (it runs the jobs).
func startNodes(t *testing.T, n int) []*hubtest.Hub {
	t.Helper()
	return startNodesOn(t, hubtest.NATS(t), n)
}

// startNodesOn is startNodes on the NATS server at nats.
func startNodesOn(t *testing.T, nats string, n int) []*hubtest.Hub {
	t.Helper()
	first := t.TempDir()
	url := pgtest.URL(t) // cluster mode runs on PostgreSQL, whatever HERD_TEST_STORE says
	var nodes []*hubtest.Hub
	for i := range n {
		dir := first
		if i > 0 {
			dir = t.TempDir()
		}
		s, err := store.Open(context.Background(), url, dir)
		if err != nil {
			t.Fatal(err)
		}
		id := "node-" + string(rune('0'+i))
		nodes = append(nodes, hubtest.Start(t, hubtest.WithDir(dir), hubtest.WithConfig(func(c *hub.Config) {
			c.Store, c.NATS, c.NodeID, c.NodeLease = s, nats, id, 3*time.Second
		})))
	}
	return nodes
}

// connectTo connects a registered device to a node.
func connectTo(t *testing.T, node *hubtest.Hub, d *herd.Device, opts ...func(*device.Client)) *device.Client {
	t.Helper()
	return connectWith(t, node, d, nil, opts...)
}

// connectWith is connectTo with options of the device client.
func connectWith(t *testing.T, node *hubtest.Hub, d *herd.Device, devOpts []device.Option, opts ...func(*device.Client)) *device.Client {
	t.Helper()
	cs := sas.ConnectionString{HostName: "localhost", DeviceID: d.DeviceID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
	c, err := device.New(cs.String(), append([]device.Option{device.WithCA(node.CA), device.WithAddress(node.MQTTAddr)}, devOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(c)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// oneShot forwards the first connection made to it to addr and refuses
// every later one: for a device client whose reconnects must not reach
// the hub.
func oneShot(t *testing.T, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		down, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", addr)
		if err != nil {
			down.Close()
			return
		}
		go func() {
			_, _ = io.Copy(up, down)
			up.Close()
		}()
		_, _ = io.Copy(down, up)
		down.Close()
	}()
	return l.Addr().String()
}

func answering(calls *atomic.Int64) func(*device.Client) {
	return func(c *device.Client) {
		c.OnMethod("ping", func(_ context.Context, p json.RawMessage) (int, any) {
			calls.Add(1)
			return 200, map[string]any{"device": c.DeviceID(), "echo": p}
		})
	}
}

// A direct method, a desired change and a registry change reach a device
// on another node than the caller's; a call waiting for a device is
// answered when it connects to another node; a job created on one node
// runs on the node that runs jobs, over devices on every node.
func TestClusterRoutesAcrossNodes(t *testing.T) {
	ctx := context.Background()
	nodes := startNodes(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]

	st, err := b.Service.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 || st.NodeID != "node-1" {
		t.Fatalf("cluster status on node-1: %+v", st)
	}
	for _, n := range st.Nodes {
		if n.State != herd.NodeAlive {
			t.Errorf("node %s is %s", n.NodeID, n.State)
		}
	}

	var devs []*herd.Device
	for _, id := range []string{"d-b", "d-c", "late", "keyed"} {
		d, err := a.Service.CreateDevice(ctx, herd.Device{DeviceID: id})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	var calls atomic.Int64
	var mu sync.Mutex
	var desired []int64
	devB := connectTo(t, b, devs[0], answering(&calls), func(d *device.Client) {
		d.OnDesiredChange(func(_ map[string]any, v int64) {
			mu.Lock()
			desired = append(desired, v)
			mu.Unlock()
		})
	})
	connectTo(t, c, devs[1], answering(&calls))

	// Every node counts the devices of the cluster.
	hubtest.Eventually(t, 10*time.Second, func() bool {
		st, err := a.Service.ServiceStatistics(ctx)
		return err == nil && st.ConnectedDeviceCount == 2
	}, "node-0 does not count the devices connected to node-1 and node-2")

	// A method from node-0 to a device on node-1, and from node-2.
	for _, caller := range []*hubtest.Hub{a, c} {
		res, err := caller.Service.InvokeMethod(ctx, "d-b", herd.MethodRequest{MethodName: "ping", Payload: json.RawMessage(`{"n":1}`), ResponseTimeoutInSeconds: 10})
		if err != nil {
			t.Fatalf("method across nodes: %v", err)
		}
		var body struct {
			Device string          `json:"device"`
			Echo   json.RawMessage `json:"echo"`
		}
		if err := json.Unmarshal(res.Payload, &body); res.Status != 200 || err != nil || body.Device != "d-b" || string(body.Echo) != `{"n":1}` {
			t.Errorf("result %d %s", res.Status, res.Payload)
		}
	}
	// Each call is counted once, on the node that took it.
	for _, x := range []struct {
		h    *hubtest.Hub
		want float64
	}{{a, 1}, {b, 0}, {c, 1}} {
		if got := answeredCalls(t, x.h); got != x.want {
			t.Errorf("%s counts %v answered method calls, want %v", x.h.Cluster.NodeID(), got, x.want)
		}
	}
	// A device that no node holds: DeviceNotOnline at once.
	if _, err := a.Service.InvokeMethod(ctx, "late", herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 5}); !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Errorf("a device connected nowhere: %v", err)
	}
	// A call that waits for a device answered once it connects elsewhere.
	waited := make(chan error, 1)
	go func() {
		_, err := a.Service.InvokeMethod(ctx, "late", herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10, ConnectTimeoutInSeconds: 30})
		waited <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the call start waiting; it is answered either way
	connectTo(t, c, devs[2], answering(&calls))
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("a call waiting for a device that connected to another node: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a call waiting for a device that connected to another node was not answered")
	}

	// A monitor on node-0 sees the messages of a device on node-1.
	got := make(chan *herd.Event, 64)
	mctx, stopMonitor := context.WithCancel(ctx)
	defer stopMonitor()
	go a.Service.MonitorEvents(mctx, "d-b", service.EventHandler{Event: func(e *herd.Event) error {
		select {
		case got <- e:
		default:
		}
		return nil
	}})
	seen := false
	for deadline := time.Now().Add(10 * time.Second); !seen && time.Now().Before(deadline); {
		if err := devB.SendEvent(ctx, []byte(`{"temp":21}`), map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-got:
			seen = true
			if e.DeviceID != "d-b" || string(e.Body) != `{"temp":21}` || e.Properties["k"] != "v" {
				t.Errorf("event %+v", e)
			}
		case <-time.After(200 * time.Millisecond): // the monitor may not be heard yet
		}
	}
	if !seen {
		t.Error("a monitor on node-0 sees nothing of a device on node-1")
	}
	stopMonitor()

	// A desired change made on node-2 reaches the device on node-1.
	tw, err := c.Service.UpdateTwin(ctx, "d-b", herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"fw": "2.0"}}}, "*")
	if err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(desired) > 0 && fmt.Sprint(desired[len(desired)-1]) == fmt.Sprint(tw.Properties.Desired["$version"])
	}, "the desired change made on node-2 (%v) did not reach the device on node-1 (it saw %v)", tw.Properties.Desired["$version"], &desired)

	// A device re-keyed on node-0 is disconnected from node-2, and its old
	// key no longer works there.
	keyed := devs[3]
	kc := connectTo(t, c, keyed)
	states := make(chan device.ConnectionState, 16)
	kc.OnConnectionState(func(s device.ConnectionState, _ error) { states <- s })
	keyed.Authentication.SymmetricKey.PrimaryKey, keyed.Authentication.SymmetricKey.SecondaryKey = auth.NewKey(), auth.NewKey()
	if _, err := a.Service.UpdateDevice(ctx, *keyed, "*"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-states:
		if s != device.Disconnected {
			t.Errorf("after the re-key the device on node-2 went %s", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a device re-keyed on node-0 stays connected to node-2")
	}

	// The device connects again, to node-1 while its connection to node-2
	// is open: node-2 closes that one, and methods reach the new one.
	mover, err := a.Service.CreateDevice(ctx, herd.Device{DeviceID: "mover"})
	if err != nil {
		t.Fatal(err)
	}
	// It must not come back on its own, or it would take the device back:
	// the SDK redials at once after a disconnect, so it reaches node-2
	// through a forwarder that takes one connection only.
	first := connectWith(t, c, mover, []device.Option{device.WithBackoff(time.Hour, time.Hour), device.WithAddress(oneShot(t, c.MQTTAddr))}, answering(&calls))
	firstStates := make(chan device.ConnectionState, 16)
	first.OnConnectionState(func(s device.ConnectionState, _ error) { firstStates <- s })
	connectTo(t, b, mover, func(d *device.Client) {
		d.OnMethod("ping", func(context.Context, json.RawMessage) (int, any) { return 201, "the new connection" })
	})
	select {
	case s := <-firstStates:
		if s != device.Disconnected {
			t.Errorf("the first connection went %s", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the device's connection to node-2 stays open after it connected to node-1")
	}
	first.Close()
	hubtest.Eventually(t, 10*time.Second, func() bool {
		res, err := a.Service.InvokeMethod(ctx, "mover", herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 5})
		return err == nil && res.Status == 201
	}, "methods do not reach the device's new connection")

	// A method job created on node-2 runs (on node-0) over the devices of
	// node-1 and node-2.
	before := calls.Load()
	if _, err := c.Service.ScheduleDeviceMethod(ctx, "ping-all", "deviceId IN ['d-b', 'd-c', 'late']",
		herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	j, err := b.Service.WaitJob(wctx, "ping-all", nil)
	if err != nil {
		j, _ := b.Service.GetJob(ctx, "ping-all")
		t.Fatalf("waiting for the job: %v; it is %+v %+v", err, j, j.DeviceJobStatistics)
	}
	if s := j.DeviceJobStatistics; j.Status != herd.JobCompleted || s.SucceededCount != 3 {
		t.Errorf("job: %s %+v", j.Status, *s)
	}
	if n := calls.Load() - before; n != 3 {
		t.Errorf("the job called %d devices, want 3", n)
	}

	// A configuration made on node-1 is applied (by node-0) to a device
	// tagged on node-2.
	if _, err := b.Service.CreateConfiguration(ctx, herd.Configuration{ID: "eco", Priority: 1, TargetCondition: "tags.ring = 'canary'",
		Content: herd.ConfigurationContent{DeviceContent: map[string]json.RawMessage{"properties.desired.mode": json.RawMessage(`"eco"`)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Service.UpdateTwin(ctx, "d-c", herd.TwinPatch{Tags: map[string]any{"ring": "canary"}}, "*"); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		tw, err := a.Service.GetTwin(ctx, "d-c")
		return err == nil && tw.Properties.Desired["mode"] == "eco"
	}, "the configuration made on node-1 is not applied to the device tagged on node-2")

	// A job waiting for a device that does not come, cancelled on node-1:
	// node-0 stops running it at once.
	if _, err := a.Service.CreateDevice(ctx, herd.Device{DeviceID: "absent"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Service.ScheduleDeviceMethod(ctx, "waiting", "deviceId = 'absent'",
		herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10, ConnectTimeoutInSeconds: 300}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		j, err := c.Service.GetJob(ctx, "waiting")
		return err == nil && j.DeviceJobStatistics.RunningCount+j.DeviceJobStatistics.PendingCount == 1 && j.Status == herd.JobRunning
	}, "the job does not run")
	if _, err := b.Service.CancelJob(ctx, "waiting"); err != nil {
		t.Fatal(err)
	}
	j, err = c.Service.WaitJob(wctx, "waiting", nil)
	if err != nil {
		t.Fatalf("the job cancelled on node-1 does not end: %v", err)
	}
	if j.Status != herd.JobCancelled {
		t.Errorf("job cancelled on node-1: %s", j.Status)
	}
}

// answeredCalls is a hub's herd_method_calls_total{result="answered"}.
func answeredCalls(t *testing.T, h *hubtest.Hub) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "herd_method_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "answered" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
