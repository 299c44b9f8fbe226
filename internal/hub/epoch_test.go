package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/hubtest"
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
	hubtest.Eventually(t, 10*time.Second, func() bool { return b.Gateway.ConnectionEpoch("mover") == 0 },
		"a notice of a newer connection did not close the older one")
}
