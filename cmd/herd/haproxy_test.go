package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// TestHAProxy runs the HAProxy configuration shipped in docs/haproxy.cfg
// (Debian's haproxy; the test's ports in place of the file's) in front of
// three nodes: back ends and devices use only the balancer's two
// addresses, devices spread over the nodes, and when a node stops
// (SIGTERM) its devices come back through the balancer on the others and
// answer methods again.
func TestHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if _, serr := os.Stat("/usr/sbin/haproxy"); err != nil && serr == nil {
		bin, err = "/usr/sbin/haproxy", nil // Debian's, off a user's PATH
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("HAProxy is required in CI (make test installs Debian's haproxy): %v", err)
		}
		t.Skipf("HAProxy not installed (apt-get install haproxy): %v", err)
	}
	ctx := context.Background()
	c := newTestCluster(t)
	nodes := []*clusterNode{c.start(0), c.start(1), c.start(2)}

	b, err := os.ReadFile("../../docs/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	mqttLB, restLB := freeAddr(t), freeAddr(t)
	replace := func(old, new string) {
		t.Helper()
		if n := strings.Count(cfg, old); n != 1 {
			t.Fatalf("docs/haproxy.cfg has %q %d times, want once", old, n)
		}
		cfg = strings.Replace(cfg, old, new, 1)
	}
	replace("bind :8883\n", "bind "+mqttLB+"\n")
	replace("bind :443\n", "bind "+restLB+"\n")
	for i, n := range nodes {
		_, restPort, _ := net.SplitHostPort(n.rest)
		replace(fmt.Sprintf("127.0.0.1:1%d883 check port 1%d443\n", i, i), n.mqtt+" check port "+restPort+"\n")
		replace(fmt.Sprintf("127.0.0.1:1%d443 check\n", i), n.rest+" check\n")
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	lb := exec.Command(bin, "-db", "-f", path)
	var lbLog syncBuffer
	lb.Stdout, lb.Stderr = &lbLog, &lbLog
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lb.Process.Kill()
		lb.Wait()
		if t.Failed() {
			t.Logf("haproxy logged:\n%s", lbLog.String())
		}
	})

	// The service SDK through the balancer only.
	_, port, _ := net.SplitHostPort(restLB)
	admin, err := service.New(nodes[0].connections, service.WithCAFile(c.ca), service.WithEndpoint("https://localhost:"+port))
	if err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 30*time.Second, func() bool {
		_, err := admin.Cluster(ctx)
		return err == nil
	}, "the REST API is not reachable through HAProxy")
	ca, err := os.ReadFile(c.ca)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	for i := range n {
		d, err := admin.CreateDevice(ctx, herd.Device{DeviceID: fmt.Sprintf("lb-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		cs := sas.ConnectionString{HostName: "localhost", DeviceID: d.DeviceID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
		dc, err := device.New(cs.String(), device.WithCA(ca), device.WithAddress(mqttLB))
		if err != nil {
			t.Fatal(err)
		}
		id := d.DeviceID
		dc.OnMethod("where", func(context.Context, json.RawMessage) (int, any) { return 200, id })
		if err := dc.Connect(ctx); err != nil {
			t.Fatalf("connect %s through HAProxy: %v", id, err)
		}
		t.Cleanup(func() { dc.Close() })
	}
	spread := func() map[string]int64 {
		st, err := admin.Cluster(ctx)
		if err != nil {
			return nil
		}
		out := map[string]int64{}
		for _, nd := range st.Nodes {
			if nd.State == herd.NodeAlive {
				out[nd.NodeID] = nd.ConnectedDevices
			}
		}
		return out
	}
	var got map[string]int64
	hubtest.Eventually(t, 20*time.Second, func() bool {
		got = spread()
		return len(got) == 3 && got["node-0"] > 0 && got["node-1"] > 0 && got["node-2"] > 0 && got["node-0"]+got["node-1"]+got["node-2"] == n
	}, "the devices are not spread over the three nodes: %v", &got)
	methods := func(what string) {
		t.Helper()
		for i := range n {
			id := fmt.Sprintf("lb-%d", i)
			res, err := admin.InvokeMethod(ctx, id, herd.MethodRequest{MethodName: "where", ResponseTimeoutInSeconds: 10, ConnectTimeoutInSeconds: 30})
			if err != nil || res.Status != 200 || string(res.Payload) != `"`+id+`"` {
				t.Fatalf("%s: a method through HAProxy to %s: %+v %v", what, id, res, err)
			}
		}
	}
	methods("three nodes")

	// node-1 stops: its devices reconnect through the balancer to the
	// others.
	if err := nodes[1].proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].proc.Wait(); err != nil {
		t.Fatalf("node-1 after SIGTERM: %v", err)
	}
	hubtest.Eventually(t, 30*time.Second, func() bool {
		got = spread()
		return len(got) == 2 && got["node-0"]+got["node-2"] == n
	}, "node-1's devices did not come back through HAProxy on the other nodes: %v", &got)
	methods("after node-1 stopped")
}
