package hub_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/nats-io/nats.go"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// TestTakeoverOrderedByEpoch: a device's connections on different nodes
// are ordered by the epochs their claims gave them, not by the nodes'
// clocks. A notice from a node whose clock is ahead but whose connection
// is older closes nothing; the node the device left records nothing over
// the newer connection's state.
func TestTakeoverOrderedByEpoch(t *testing.T) {
	ctx := context.Background()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	d, err := a.Service.CreateDevice(ctx, herd.Device{DeviceID: "mover"})
	if err != nil {
		t.Fatal(err)
	}
	first := connectWith(t, a, d, []device.Option{device.WithBackoff(time.Hour, time.Hour), device.WithAddress(oneShot(t, a.MQTTAddr))})
	states := make(chan device.ConnectionState, 16)
	first.OnConnectionState(func(s device.ConnectionState, _ error) { states <- s })
	old := a.Gateway.ConnectionEpoch("mover")
	if old == 0 {
		t.Fatal("a connection in a cluster has no epoch")
	}
	connectTo(t, b, d)
	select {
	case <-states:
	case <-time.After(10 * time.Second):
		t.Fatal("node-0 kept the device's older connection")
	}
	cur := b.Gateway.ConnectionEpoch("mover")
	if cur <= old {
		t.Fatalf("the newer connection's epoch %d is not above the older one's %d", cur, old)
	}
	// node-0 writes what it saw of its connection (the disconnect): the
	// device stays Connected, on node-1.
	if err := a.Registry.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Registry.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if dev, err := a.Service.GetDevice(ctx, "mover"); err != nil || dev.ConnectionState != herd.Connected {
		t.Fatalf("after the older node's writes the device is %v (%v), want Connected", dev.ConnectionState, err)
	}
	// A late notice of the older connection, stamped by a clock an hour
	// ahead, closes nothing; one of a newer epoch stamped an hour behind
	// does.
	b.Gateway.TakenOver("mover", time.Now().Add(time.Hour), old)
	if b.Gateway.ConnectionEpoch("mover") != cur {
		t.Fatal("a notice of an older connection closed the newer one (ordered by clock, not epoch)")
	}
	b.Gateway.TakenOver("mover", time.Now().Add(-time.Hour), cur+1)
	// Closed, the client connects again (after 100 ms or so) under a
	// newer epoch still: a poll that comes late under load sees that one.
	hubtest.Eventually(t, 10*time.Second, func() bool { return b.Gateway.ConnectionEpoch("mover") != cur },
		"a notice of a newer connection did not close the older one")
}

// TestSessionKeptWhenDeviceMovesAtOnce: a device that subscribes, leaves
// at once and connects to another node without subscribing again (as
// Azure's SDKs do when they renew a token) finds its session there, and
// methods reach it. A first session used to be written up to 100 ms after
// its SUBACK; in a cluster that write came after the new node's claim,
// which made it stale, so the session was lost for good.
func TestSessionKeptWhenDeviceMovesAtOnce(t *testing.T) {
	ctx := context.Background()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	d, err := a.Service.CreateDevice(ctx, herd.Device{DeviceID: "quick-mover"})
	if err != nil {
		t.Fatal(err)
	}
	first := dialRaw(t, a, d)
	if present := first.connect(t); present {
		t.Fatal("a new device's first CONNACK says sessionPresent=1")
	}
	first.subscribe(t, "$iothub/methods/POST/#")
	first.disconnect()

	second := dialRaw(t, b, d)
	if !second.connect(t) {
		t.Fatal("the device's session was lost when it moved to another node at once: CONNACK sessionPresent=0")
	}
	got := make(chan *herd.MethodResult, 1)
	go func() {
		r, err := a.Service.InvokeMethod(ctx, d.DeviceID, herd.MethodRequest{MethodName: "ping", Payload: []byte(`{}`), ResponseTimeoutInSeconds: 10})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	pub := second.next(t)
	rid := pub.TopicName[strings.LastIndex(pub.TopicName, "=")+1:]
	second.publish(t, "$iothub/methods/res/200/?$rid="+rid, `{"pong":true}`)
	if r := <-got; r == nil || r.Status != 200 {
		t.Fatalf("the method over the kept session: %+v", r)
	}
}

// rawDevice is a device's MQTT connection without a client library's
// session logic: it subscribes only when told to.
type rawDevice struct {
	nc net.Conn
	d  *herd.Device
}

func dialRaw(t *testing.T, node *hubtest.Hub, d *herd.Device) *rawDevice {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(node.CA)
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", node.MQTTAddr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return rawOn(t, nc, d)
}

// rawOn is a rawDevice on an open connection (closed when the test ends).
func rawOn(t *testing.T, nc net.Conn, d *herd.Device) *rawDevice {
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawDevice{nc, d}
}

// connect sends a clean-session-0 CONNECT and returns sessionPresent.
func (r *rawDevice) connect(t *testing.T) bool {
	t.Helper()
	tok, err := sas.DeviceToken("localhost", r.d.DeviceID, "", r.d.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion, cp.ClientIdentifier, cp.CleanSession, cp.Keepalive = "MQTT", 4, r.d.DeviceID, false, 60
	cp.UsernameFlag, cp.Username = true, "localhost/"+r.d.DeviceID+"/?api-version=2021-04-12"
	cp.PasswordFlag, cp.Password = true, []byte(tok)
	if err := cp.Write(r.nc); err != nil {
		t.Fatal(err)
	}
	ack, ok := r.read(t).(*packets.ConnackPacket)
	if !ok || ack.ReturnCode != packets.Accepted {
		t.Fatalf("CONNECT refused: %v", ack)
	}
	return ack.SessionPresent
}

func (r *rawDevice) subscribe(t *testing.T, topics ...string) {
	t.Helper()
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID, sp.Topics, sp.Qoss = 1, topics, make([]byte, len(topics))
	if err := sp.Write(r.nc); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.read(t).(*packets.SubackPacket); !ok {
		t.Fatal("no SUBACK")
	}
}

func (r *rawDevice) publish(t *testing.T, topic, payload string) {
	t.Helper()
	pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pp.TopicName, pp.Payload = topic, []byte(payload)
	if err := pp.Write(r.nc); err != nil {
		t.Fatal(err)
	}
}

// next returns the next PUBLISH the hub sends.
func (r *rawDevice) next(t *testing.T) *packets.PublishPacket {
	t.Helper()
	for {
		if p, ok := r.read(t).(*packets.PublishPacket); ok {
			return p
		}
	}
}

func (r *rawDevice) read(t *testing.T) packets.ControlPacket {
	t.Helper()
	p, err := packets.ReadPacket(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (r *rawDevice) disconnect() {
	_ = packets.NewControlPacket(packets.Disconnect).Write(r.nc)
	r.nc.Close()
}

// TestTwinJobDesiredToHoldingNode: a twin job's desired changes go to the
// node that holds each device's connection, and nowhere for a device not
// connected: none is broadcast to every node.
func TestTwinJobDesiredToHoldingNode(t *testing.T) {
	ctx := context.Background()
	url := hubtest.NATS(t)
	nodes := startNodesOn(t, url, 3)
	watch, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watch.Close)
	var mu sync.Mutex
	seen := map[string][]string{} // subject: device ids
	if _, err := watch.Subscribe("herd.>", func(m *nats.Msg) {
		if !strings.HasSuffix(m.Subject, ".desired") {
			return
		}
		var ds []struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(m.Data, &ds)
		mu.Lock()
		defer mu.Unlock()
		for _, d := range ds {
			seen[m.Subject] = append(seen[m.Subject], d.ID)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}

	versions := map[string]chan int64{}
	for i, id := range []string{"held-1", "held-2", "offline"} {
		d, err := nodes[0].Service.CreateDevice(ctx, herd.Device{DeviceID: id})
		if err != nil {
			t.Fatal(err)
		}
		if id == "offline" {
			continue
		}
		ch := make(chan int64, 4)
		versions[id] = ch
		connectTo(t, nodes[i+1], d, func(c *device.Client) {
			c.OnDesiredChange(func(_ map[string]any, v int64) { ch <- v })
		})
	}
	// The devices are on node-1 and node-2; the job runs on whichever
	// node takes its lease.
	if _, err := nodes[0].Service.ScheduleTwinUpdate(ctx, "routed", "*",
		herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"mode": "eco"}}}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if j, err := nodes[0].Service.WaitJob(wctx, "routed", nil); err != nil || j.DeviceJobStatistics.SucceededCount != 3 {
		t.Fatalf("the twin job: %+v %v", j, err)
	}
	for id, ch := range versions {
		select {
		case v := <-ch:
			if v != 2 {
				t.Errorf("%s got desired $version %d, want 2", id, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not get the job's desired change", id)
		}
	}
	// The change of a device on the node that ran the job is delivered
	// there; the other's goes to its node's subject, not to every node.
	r, err := nodes[0].Store.Job(ctx, "routed")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for i, id := range []string{"held-1", "held-2"} {
		if on := fmt.Sprintf("node-%d", i+1); on != r.Lease.Node {
			want["herd.node."+on+".desired"] = []string{id}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("the desired changes of the job run by %s went to %v, want %v", r.Lease.Node, seen, want)
	}
}
