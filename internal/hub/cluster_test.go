package hub_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/cluster"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// A node takes its lease when it starts, renews it with what it reports of
// itself (addresses, connected devices), shows it in GET /cluster and ends
// it when it shuts down; the next node on the store sees it stopped.
func TestNodeLease(t *testing.T) {
	ctx := context.Background()
	lease := func(c *hub.Config) { c.NodeID, c.NodeLease, c.Version = "node-a", 3*time.Second, "v-test" }
	h := hubtest.Start(t, hubtest.WithConfig(lease))
	st, err := h.Service.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.NodeID != "node-a" || len(st.Nodes) != 1 {
		t.Fatalf("status %+v", st)
	}
	n := st.Nodes[0]
	if n.NodeID != "node-a" || n.State != herd.NodeAlive || n.RESTAddress != h.HTTPSAddr().String() ||
		n.MQTTAddress != h.MQTTAddr || n.Version != "v-test" || !n.StoppedTime.IsZero() || !n.LeaseUntil.After(n.RenewedTime.Time) {
		t.Errorf("node %+v", n)
	}
	// A device connects: the next renewals say so.
	d, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	cs := sas.ConnectionString{HostName: "localhost", DeviceID: "d1", SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
	c, err := device.New(cs.String(), device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		st, err := h.Service.Cluster(ctx)
		return err == nil && st.Nodes[0].ConnectedDevices == 1 && st.Nodes[0].RenewedTime.After(n.RenewedTime.Time) && st.Nodes[0].Leader
	}, "the renewed lease does not count the connected device, or does not say that the hub alone runs its jobs")

	// Registry read rights are enough; a policy without them is refused.
	for _, p := range []struct {
		policy string
		ok     bool
	}{{"registryRead", true}, {"registryReadWrite", true}, {"service", false}, {"device", false}} {
		pcs, err := h.Hub.ConnectionString(p.policy)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Client(t, pcs).Cluster(ctx)
		if p.ok != (err == nil) || !p.ok && !herd.IsCode(err, herd.ErrUnauthorized) {
			t.Errorf("GET /cluster as %s: %v", p.policy, err)
		}
	}

	c.Close()
	h.Stop()
	other := hubtest.Start(t, hubtest.WithDir(h.Dir), hubtest.WithConfig(func(c *hub.Config) { c.NodeID = "node-b" }))
	st, err = other.Service.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.NodeID != "node-b" || len(st.Nodes) != 2 || st.Nodes[0].NodeID != "node-a" || st.Nodes[1].NodeID != "node-b" {
		t.Fatalf("status after a restart as node-b: %+v", st)
	}
	if a := st.Nodes[0]; a.State != herd.NodeStopped || a.StoppedTime.IsZero() {
		t.Errorf("node-a after its shutdown: %+v", a)
	}
	if b := st.Nodes[1]; b.State != herd.NodeAlive {
		t.Errorf("node-b: %+v", b)
	}
}

// Without --node-id a data folder keeps the id it made the first time.
func TestNodeIDKeptInDataFolder(t *testing.T) {
	dir := t.TempDir()
	h := hubtest.Start(t, hubtest.WithDir(dir))
	id := h.Cluster.NodeID()
	h.Stop()
	b, err := os.ReadFile(filepath.Join(dir, cluster.NodeIDFile))
	if err != nil || strings.TrimSpace(string(b)) != id || cluster.ValidNodeID(id) != nil {
		t.Fatalf("node-id file %q (%v), node %q", b, err, id)
	}
	again := hubtest.Start(t, hubtest.WithDir(dir))
	if again.Cluster.NodeID() != id {
		t.Errorf("restarted as %q, not %q", again.Cluster.NodeID(), id)
	}
}

// A node marks Disconnected only what cannot be connected: at its start
// what it held itself (it was killed) and what nodes without a lease
// held; while it runs, the devices of a node whose lease lapses. The
// devices of a node that runs are left alone, and so are its own.
func TestNodeDisconnectsOnlyWhatIsGone(t *testing.T) {
	ctx := context.Background()
	lease := func(c *hub.Config) { c.NodeID, c.NodeLease = "node-a", 600*time.Millisecond }
	h := hubtest.Start(t, hubtest.WithConfig(lease))
	ids := []string{"live", "mine", "far", "gone", "legacy"}
	for _, id := range ids {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	// "live" really connects to node-a; the others are what other nodes,
	// or an earlier life of node-a, left in the store.
	d, _ := h.Service.GetDevice(ctx, "live")
	cs := sas.ConnectionString{HostName: "localhost", DeviceID: "live", SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
	connect := func(h *hubtest.Hub) *device.Client {
		c, err := device.New(cs.String(), device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := connect(h)
	defer c.Close()
	now := time.Now()
	var changes []registry.ConnectionChange
	for id, node := range map[string]string{"mine": "node-a", "far": "node-far", "gone": "node-gone", "legacy": ""} {
		changes = append(changes, registry.ConnectionChange{DeviceID: id, Node: node, State: herd.Connected, StateAt: now, ActivityAt: now})
	}
	if err := h.Hub.Store.SetConnectionStates(ctx, changes); err != nil {
		t.Fatal(err)
	}
	renew := func(node string, until time.Time) {
		t.Helper()
		if err := h.Hub.Store.RenewNode(ctx, cluster.Lease{NodeID: node, StartedTime: now, RenewedTime: now, LeaseUntil: until}); err != nil {
			t.Fatal(err)
		}
	}
	renew("node-far", now.Add(time.Hour))
	renew("node-gone", now.Add(-time.Second)) // killed: its lease lapsed, no stop
	states := func(h *hubtest.Hub) map[string]herd.ConnectionState {
		out := map[string]herd.ConnectionState{}
		for _, id := range ids {
			d, err := h.Service.GetDevice(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			out[id] = d.ConnectionState
		}
		return out
	}
	connected := func(want ...string) func(map[string]herd.ConnectionState) bool {
		return func(got map[string]herd.ConnectionState) bool {
			for _, id := range ids {
				if (got[id] == herd.Connected) != slices.Contains(want, id) {
					return false
				}
			}
			return true
		}
	}
	expect := func(h *hubtest.Hub, what string, want ...string) {
		t.Helper()
		var got map[string]herd.ConnectionState
		hubtest.Eventually(t, 10*time.Second, func() bool { got = states(h); return connected(want...)(got) },
			what+": want connected "+strings.Join(want, ", "))
		if t.Failed() {
			t.Logf("states: %v", got)
		}
	}
	expect(h, "a running node sweeps the lost node's devices", "live", "mine", "far", "legacy")

	c.Close()
	h.Stop()
	h = hubtest.Start(t, hubtest.WithDir(h.Dir), hubtest.WithConfig(lease))
	if got := states(h); !connected("far")(got) {
		t.Errorf("after node-a's restart: %v, want only far connected", got)
	}
	c = connect(h)
	defer c.Close()
	expect(h, "a device connects again", "live", "far")

	renew("node-far", time.Now().Add(-time.Second))
	expect(h, "node-far's lease lapsed", "live")
	if got := states(h); !connected("live")(got) {
		t.Errorf("a later sweep: %v", got)
	}
}

// GET /cluster lists the jobs that have not ended: on a hub alone, the
// one it runs names the hub's node; one not due yet names none; an ended
// one is not listed.
func TestClusterStatusListsJobs(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hubtest.WithConfig(func(c *hub.Config) { c.NodeID = "solo" }))
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "away"}); err != nil {
		t.Fatal(err)
	}
	// The device never connects: the job waits for it.
	if _, err := h.Service.ScheduleDeviceMethod(ctx, "waiting", "*", herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 5,
		ConnectTimeoutInSeconds: 300}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.ScheduleDeviceMethod(ctx, "later", "*", herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 5},
		service.JobOptions{StartTime: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var jobs []herd.ClusterJob
	hubtest.Eventually(t, 10*time.Second, func() bool {
		st, err := h.Service.Cluster(ctx)
		if err != nil {
			return false
		}
		jobs = jobs[:0]
		for _, j := range st.Jobs {
			jobs = append(jobs, *j)
		}
		return len(jobs) == 2 && jobs[0].JobID == "waiting" && jobs[0].Status == herd.JobRunning && jobs[0].NodeID == "solo" &&
			jobs[1].JobID == "later" && jobs[1].NodeID == ""
	}, "GET /cluster does not list the running job on this node and the scheduled one on none: %+v", &jobs)
	for _, id := range []string{"waiting", "later"} {
		if _, err := h.Service.CancelJob(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		st, err := h.Service.Cluster(ctx)
		return err == nil && len(st.Jobs) == 0
	}, "GET /cluster still lists cancelled jobs")
}
