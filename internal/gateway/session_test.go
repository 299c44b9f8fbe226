package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/hubtest"
)

func TestPersistentSession(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	if ack := c.connect(d, false, time.Now()); ack.SessionPresent {
		t.Fatalf("sessionPresent on the first connection")
	}
	c.subscribe("$iothub/methods/POST/#", "$iothub/twin/res/#")
	c.send(packets.NewControlPacket(packets.Disconnect))
	c.expectClosed()

	// Token renewal: reconnect with clean=0 and a new token, no SUBSCRIBE.
	c = dialPlain(t, h)
	if ack := c.connect(d, false, time.Now()); !ack.SessionPresent {
		t.Fatalf("sessionPresent=0 after a clean=0 reconnect")
	}
	done := invokeAsync(t, h, d.id, herd.MethodRequest{MethodName: "m"})
	answer(t, c, 200, `1`)
	if r := <-done; r.err != nil {
		t.Fatalf("method after renewal: %v", r.err)
	}
	c.nc.Close() // a network drop

	// clean=1 discards the session.
	c = dialPlain(t, h)
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "old connection still held")
	if ack := c.connect(d, true, time.Now()); ack.SessionPresent {
		t.Fatalf("sessionPresent=1 with clean=1")
	}
	if _, err := h.Service.InvokeMethod(context.Background(), d.id, herd.MethodRequest{MethodName: "m"}); !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Fatalf("clean session kept subscriptions: %v", err)
	}
	c.send(packets.NewControlPacket(packets.Disconnect))
	c.expectClosed()
	c = dialPlain(t, h)
	if ack := c.connect(d, false, time.Now()); ack.SessionPresent {
		t.Fatalf("session survived a clean=1 connection")
	}
}

// TestTakeoverOfCleanSession: a clean=0 connection that takes over a
// clean=1 one still open gets no session (a clean session ends with its
// connection): sessionPresent=0 and no subscriptions.
func TestTakeoverOfCleanSession(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	b := dialPlain(t, h)
	b.connect(d, true, time.Now())
	b.subscribe("$iothub/methods/POST/#")
	c := dialPlain(t, h)
	if ack := c.connect(d, false, time.Now()); ack.SessionPresent {
		t.Fatal("sessionPresent=1 after taking over a clean-session connection")
	}
	b.expectClosed()
	if _, err := h.Service.InvokeMethod(context.Background(), d.id, herd.MethodRequest{MethodName: "m"}); !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Fatalf("the new connection inherited a clean session's subscriptions: %v", err)
	}
}

func TestSessionSurvivesHubRestart(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	c.subscribe("$iothub/methods/POST/#", "$iothub/twin/PATCH/properties/desired/#")
	h.Stop()
	c.expectClosed()

	h2 := hubtest.Start(t, hubtest.WithDir(h.Dir))
	d.h = h2
	c = dialPlain(t, h2)
	if ack := c.connect(d, false, time.Now()); !ack.SessionPresent {
		t.Fatalf("session lost in the restart")
	}
	done := invokeAsync(t, h2, d.id, herd.MethodRequest{MethodName: "m"})
	answer(t, c, 200, `{}`)
	if r := <-done; r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := h2.Service.UpdateTwin(context.Background(), d.id, herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"a": 1}}}, "*"); err != nil {
		t.Fatal(err)
	}
	if p := c.nextPublish(); !strings.HasPrefix(p.TopicName, "$iothub/twin/PATCH/properties/desired/") {
		t.Fatalf("no desired push after restart: %s", p.TopicName)
	}
}

func TestForbiddenTopicsDisconnect(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	newDevice(t, h, "dev2")
	publishes := []struct {
		name, topic string
		qos         byte
	}{
		{"another device's telemetry", "devices/dev2/messages/events/", 1},
		{"unknown topic", "hello/world", 0},
		{"hub-to-device topic", "$iothub/methods/POST/reboot/?$rid=1", 0},
		{"desired topic", "$iothub/twin/PATCH/properties/desired/?$version=9", 0},
		{"twin request without rid", "$iothub/twin/GET/", 0},
		{"module telemetry", "devices/dev1/modules/m1/messages/events/", 1},
		{"QoS 2", "devices/dev1/messages/events/", 2},
		{"C2D topic", "devices/dev1/messages/devicebound/x", 1},
	}
	for _, tc := range publishes {
		t.Run("publish "+tc.name, func(t *testing.T) {
			c := dialPlain(t, h)
			c.connect(d, true, time.Now())
			c.publish(tc.topic, tc.qos, []byte(`{}`))
			c.expectClosed()
		})
	}
	for _, f := range []string{"#", "$iothub/#", "devices/dev2/messages/devicebound/#", "devices/+/messages/events/#", "$iothub/methods/POST/reboot", "$share/g/x"} {
		t.Run("subscribe "+f, func(t *testing.T) {
			c := dialPlain(t, h)
			c.connect(d, true, time.Now())
			sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
			sp.MessageID, sp.Topics, sp.Qoss = 1, []string{"$iothub/twin/res/#", f}, []byte{0, 0}
			c.send(sp)
			c.expectClosed()
		})
	}
	t.Run("QoS 2 subscribe is granted 1", func(t *testing.T) {
		c := dialPlain(t, h)
		c.connect(d, true, time.Now())
		sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
		sp.MessageID, sp.Topics, sp.Qoss = 7, []string{"devices/dev1/messages/devicebound/#"}, []byte{2}
		c.send(sp)
		ack, ok := c.read().(*packets.SubackPacket)
		if !ok || ack.MessageID != 7 || len(ack.ReturnCodes) != 1 || ack.ReturnCodes[0] != 1 {
			t.Fatalf("SUBACK %+v", ack)
		}
	})
}

// No packet meant for one device may reach another: two devices subscribed
// to everything; methods, desired pushes and twin replies for one of them
// must leave the other's queue empty (its PINGRESP is its next packet).
func TestNoCrossDeviceDelivery(t *testing.T) {
	h := hubtest.Start(t)
	a, b := newDevice(t, h, "devA"), newDevice(t, h, "devB")
	ca, cb := dialPlain(t, h), dialPlain(t, h)
	all := []string{"$iothub/methods/POST/#", "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"}
	ca.connect(a, false, time.Now())
	ca.subscribe(append(all, "devices/devA/messages/devicebound/#")...)
	cb.connect(b, false, time.Now())
	cb.subscribe(append(all, "devices/devB/messages/devicebound/#")...)
	ctx := context.Background()

	done := invokeAsync(t, h, a.id, herd.MethodRequest{MethodName: "m"})
	p := ca.nextPublish()
	_, rid, _ := parseMethodTopic(p.TopicName)
	// B answering A's request id is ignored; A's answer counts.
	cb.publish("$iothub/methods/res/666/?$rid="+rid, 0, []byte(`"spoof"`))
	cb.ping()
	ca.publish("$iothub/methods/res/200/?$rid="+rid, 0, []byte(`"real"`))
	if r := <-done; r.err != nil || string(r.res.Payload) != `"real"` {
		t.Fatalf("result %+v", r)
	}
	if _, err := h.Service.UpdateTwin(ctx, a.id, herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"x": 1}}}, "*"); err != nil {
		t.Fatal(err)
	}
	ca.nextPublish()
	ca.publish("$iothub/twin/GET/?$rid=1", 0, nil)
	ca.nextPublish()
	ca.publish("devices/devA/messages/events/", 1, []byte("t"))
	if _, ok := ca.read().(*packets.PubackPacket); !ok {
		t.Fatalf("no PUBACK")
	}
	ca.ping()
	cb.ping() // nothing was queued for B before this PINGRESP
}

func TestSlowReaderIsDisconnected(t *testing.T) {
	h := hubtest.Start(t)
	slow, fast := newDevice(t, h, "slow"), newDevice(t, h, "fast")
	cs, cf := dialPlain(t, h), dialPlain(t, h)
	cs.connect(slow, false, time.Now())
	cs.subscribe("$iothub/methods/POST/#")
	cf.connect(fast, false, time.Now())
	cf.subscribe("$iothub/methods/POST/#")
	// The slow device never reads again. Requests with 100 KB payloads
	// fill the socket buffers and then its bounded queue.
	payload := []byte(`"` + strings.Repeat("p", 100*1024) + `"`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 2000 && h.Bus.Lookup(slow.id) != nil; i++ {
		go h.Methods.Invoke(ctx, slow.id, herd.MethodRequest{MethodName: "m", Payload: payload, ResponseTimeoutInSeconds: 300})
		if i%50 == 49 {
			// Meanwhile the fast device is served.
			done := invokeAsync(t, h, fast.id, herd.MethodRequest{MethodName: "m"})
			answer(t, cf, 200, `1`)
			if r := <-done; r.err != nil {
				t.Fatalf("fast device: %v", r.err)
			}
		}
	}
	hubtest.Eventually(t, 30*time.Second, func() bool { return h.Bus.Lookup(slow.id) == nil }, "slow device still connected")
	done := invokeAsync(t, h, fast.id, herd.MethodRequest{MethodName: "m"})
	answer(t, cf, 200, `1`)
	if r := <-done; r.err != nil {
		t.Fatal(r.err)
	}
}

// A device that is deleted and registered again starts without the old
// device's session.
func TestRecreatedDeviceHasNoSession(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	c.subscribe("$iothub/methods/POST/#")
	c.send(packets.NewControlPacket(packets.Disconnect))
	c.expectClosed()
	if err := h.Service.DeleteDevice(ctx, d.id, "*"); err != nil {
		t.Fatal(err)
	}
	d = newDevice(t, h, "dev1")
	c = dialPlain(t, h)
	if ack := c.connect(d, false, time.Now()); ack.SessionPresent {
		t.Fatal("the new device inherited the deleted device's session")
	}
}

// TestLongLivedPlainConnection: a plain-TCP device connected for longer
// than the bound on one socket write still receives methods (the CONNACK
// flush's write deadline once outlived the flush and failed every later
// direct write). It waits past that bound, 10 s, so it is skipped with
// -short.
func TestLongLivedPlainConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 10 s")
	}
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	c.subscribe("$iothub/methods/POST/#")
	time.Sleep(10*time.Second + 500*time.Millisecond) // past the write bound; nothing to poll for
	done := invokeAsync(t, h, d.id, herd.MethodRequest{MethodName: "m"})
	answer(t, c, 200, `1`)
	if r := <-done; r.err != nil {
		t.Fatalf("method after 10 s connected: %v", r.err)
	}
}

// TestSubackAfterSessionWritten: once the store holds a device's session,
// a change to it is in the store when its SUBACK arrives (and an
// unsubscribe when its UNSUBACK does), so that a crash of the hub right
// after the ack cannot leave a stale session that says sessionPresent=1.
// (A first session may be acknowledged before it is written: if it is
// lost, the device is told sessionPresent=0 and subscribes again.)
func TestSubackAfterSessionWritten(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	ctx := context.Background()
	stored := func() (bus.Feature, bool) {
		subs, found, err := h.Store.Session(ctx, d.id)
		if err != nil {
			t.Fatal(err)
		}
		return subs, found
	}
	c.subscribe("$iothub/methods/POST/#")
	hubtest.Eventually(t, 10*time.Second, func() bool { _, found := stored(); return found }, "first session never written")
	c.subscribe("$iothub/twin/res/#")
	if subs, found := stored(); !found || subs != bus.Methods|bus.TwinResponses {
		t.Fatalf("stored session at SUBACK: %v found=%v; want methods and twin responses", subs, found)
	}
	c.unsubscribe("$iothub/methods/POST/#")
	if subs, found := stored(); !found || subs != bus.TwinResponses {
		t.Fatalf("stored session at UNSUBACK: %v found=%v; want twin responses", subs, found)
	}
}

// TestTakenOverForgetsSession: once the device connected to another node
// of a cluster (where its session changes), this node no longer trusts
// what it remembered of the session: the device's next connection here
// gets the session as the store has it.
func TestTakenOverForgetsSession(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	c.subscribe("$iothub/methods/POST/#", "$iothub/twin/res/#")
	hangUp(t, h, c)

	// The device connects to another node and unsubscribes from methods
	// there: that node writes the session, and tells this one.
	ctx := context.Background()
	if err := h.Store.SaveSessions(ctx, []bus.SessionChange{{DeviceID: d.id, Subscriptions: bus.TwinResponses}}); err != nil {
		t.Fatal(err)
	}
	h.Gateway.TakenOver(d.id, time.Now(), 0)

	c = dialPlain(t, h)
	if ack := c.connect(d, false, time.Now()); !ack.SessionPresent {
		t.Fatal("sessionPresent=0; the stored session has twin responses")
	}
	_, err := h.Service.InvokeMethod(ctx, d.id, herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 5})
	if !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Fatalf("method to a device whose session has no method subscription: %v, want DeviceNotOnline (a stale remembered session)", err)
	}
}

// TestCleanSessionDiscardWritten: a clean-session connect's CONNACK comes
// once the stored session it discards is deleted from the store, so that
// a crash right after cannot bring the old subscriptions back (with
// sessionPresent=1) at a later clean-session-0 connect.
func TestCleanSessionDiscardWritten(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	ctx := context.Background()
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	c.subscribe("$iothub/methods/POST/#")
	hubtest.Eventually(t, 10*time.Second, func() bool {
		_, found, err := h.Store.Session(ctx, d.id)
		return err == nil && found
	}, "first session never written")
	hangUp(t, h, c)

	c = dialPlain(t, h)
	if ack := c.connect(d, true, time.Now()); ack.SessionPresent {
		t.Fatal("sessionPresent=1 with clean=1")
	}
	if _, found, err := h.Store.Session(ctx, d.id); err != nil || found {
		t.Fatalf("the store still holds the discarded session at CONNACK (found=%v, err=%v)", found, err)
	}
}

// hangUp disconnects c cleanly and waits until the hub no longer holds
// the connection.
func hangUp(t *testing.T, h *hubtest.Hub, c *rawClient) {
	t.Helper()
	c.send(packets.NewControlPacket(packets.Disconnect))
	c.expectClosed()
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "connection still held")
}
