package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/cluster"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

var hubTests = []struct {
	name string
	fn   func(*testing.T, Store)
}{
	{"Sessions", testSessions},
	{"ModuleSessions", testModuleSessions},
	{"Settings", testSettings},
	{"ResetConnectionStates", testResetConnectionStates},
	{"Ping", testPing},
	{"NodeLeases", testNodeLeases},
}

// testSessions: persistent sessions are saved in batches, read back,
// deleted, never created for a device that does not exist, and go with
// their device.
func testSessions(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "a", "b")
	if _, found, err := s.Session(ctx, "a"); err != nil || found {
		t.Fatalf("a new device has a session: %v %v", found, err)
	}
	err := s.SaveSessions(ctx, []bus.SessionChange{
		{DeviceID: "a", Subscriptions: bus.Methods | bus.Desired},
		{DeviceID: "b", Subscriptions: bus.TwinResponses},
		{DeviceID: "ghost", Subscriptions: bus.Methods}, // not registered: ignored
	})
	if err != nil {
		t.Fatal(err)
	}
	if subs, found, err := s.Session(ctx, "a"); err != nil || !found || subs != bus.Methods|bus.Desired {
		t.Errorf("a: %v %v %v", subs, found, err)
	}
	if _, found, _ := s.Session(ctx, "ghost"); found {
		t.Error("a session was created for a device that does not exist")
	}
	// A later change wins; a delete removes; an empty set is a session.
	if err := s.SaveSessions(ctx, []bus.SessionChange{{DeviceID: "a", Subscriptions: 0}, {DeviceID: "b", Delete: true}}); err != nil {
		t.Fatal(err)
	}
	if subs, found, _ := s.Session(ctx, "a"); !found || subs != 0 {
		t.Errorf("a after an empty set: %v %v", subs, found)
	}
	if _, found, _ := s.Session(ctx, "b"); found {
		t.Error("b's session was not deleted")
	}
	// Deleting the device deletes its session.
	res, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpDelete, DeviceID: "a", Change: func(*herd.Device) error { return nil }}})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	create(t, s, "a")
	if _, found, _ := s.Session(ctx, "a"); found {
		t.Error("a re-created device inherited the old device's session")
	}
}

// A module's session (identity {deviceId}/{moduleId}) is kept apart from
// its device's and goes with the module, or with its device.
func testModuleSessions(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "gw")
	for _, m := range []string{"cam", "mic"} {
		if _, err := s.CreateModule(ctx, newModule("gw", m), twin.NewDoc(t0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveSessions(ctx, []bus.SessionChange{
		{DeviceID: "gw", Subscriptions: bus.C2D},
		{DeviceID: "gw/cam", Subscriptions: bus.Methods | bus.Desired},
		{DeviceID: "gw/mic", Subscriptions: bus.TwinResponses},
		{DeviceID: "gw/ghost", Subscriptions: bus.Methods}, // no such module: ignored
	}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bus.Feature{"gw": bus.C2D, "gw/cam": bus.Methods | bus.Desired, "gw/mic": bus.TwinResponses} {
		if subs, found, err := s.Session(ctx, id); err != nil || !found || subs != want {
			t.Errorf("%s: %v %v %v, want %v", id, subs, found, err, want)
		}
	}
	if _, found, _ := s.Session(ctx, "gw/ghost"); found {
		t.Error("a session was created for a module that does not exist")
	}
	if err := s.SaveSessions(ctx, []bus.SessionChange{{DeviceID: "gw/mic", Delete: true}}); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := s.Session(ctx, "gw/mic"); found {
		t.Error("gw/mic's session was not deleted")
	}
	if err := s.DeleteModule(ctx, "gw", "cam", func(*herd.Module) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateModule(ctx, newModule("gw", "cam"), twin.NewDoc(t0)); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := s.Session(ctx, "gw/cam"); found {
		t.Error("a re-created module inherited the old module's session")
	}
	if subs, found, _ := s.Session(ctx, "gw"); !found || subs != bus.C2D {
		t.Errorf("the device's session after its module's changes: %v %v", subs, found)
	}
}

func testSettings(t *testing.T, s Store) {
	ctx := context.Background()
	if v, err := s.Setting(ctx, "hostname"); err != nil || v != "" {
		t.Fatalf("unset setting: %q %v", v, err)
	}
	for _, v := range []string{"h1", "h2", ""} {
		if err := s.SetSetting(ctx, "hostname", v); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Setting(ctx, "hostname"); err != nil || got != v {
			t.Errorf("setting = %q %v, want %q", got, err, v)
		}
	}
}

func testResetConnectionStates(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "on", "off")
	if err := s.SetConnectionStates(ctx, []registry.ConnectionChange{{DeviceID: "on", State: herd.Connected, StateAt: t0, ActivityAt: t0}}); err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(time.Minute)
	if err := s.ResetConnectionStates(ctx, t1); err != nil {
		t.Fatal(err)
	}
	on, _ := s.Device(ctx, "on")
	off, _ := s.Device(ctx, "off")
	if on.ConnectionState != herd.Disconnected || !on.ConnectionStateUpdatedTime.Equal(t1) || !on.LastActivityTime.Equal(t0) {
		t.Errorf("reset device: %s %v %v", on.ConnectionState, on.ConnectionStateUpdatedTime, on.LastActivityTime)
	}
	if off.ConnectionState != herd.Disconnected || !off.ConnectionStateUpdatedTime.IsZero() {
		t.Errorf("a device that was not connected changed: %s %v", off.ConnectionState, off.ConnectionStateUpdatedTime)
	}
}

func testPing(t *testing.T, s Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("ping an open store: %v", err)
	}
}

// testNodeLeases: a node's lease row is created, renewed in place, ended
// by a stop and cleared by a new start; nodes are listed in id order and
// forgotten once their lease ended before the purge's time.
func testNodeLeases(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	lease := func(id string, started, at time.Time, connected int64) cluster.Lease {
		return cluster.Lease{NodeID: id, StartedTime: started, RenewedTime: at, LeaseUntil: at.Add(15 * time.Second),
			Info: cluster.Info{RESTAddress: "127.0.0.1:443", MQTTAddress: "127.0.0.1:8883", Version: "v1", ConnectedDevices: connected}}
	}
	if nodes, err := s.Nodes(ctx); err != nil || len(nodes) != 0 {
		t.Fatalf("Nodes of a new store: %v, %v", nodes, err)
	}
	for _, l := range []cluster.Lease{lease("b", t0, t0, 1), lease("a", t0, t0, 2), lease("b", t0, t0.Add(5*time.Second), 3)} {
		if err := s.RenewNode(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	nodes, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].NodeID != "a" || nodes[1].NodeID != "b" {
		t.Fatalf("nodes %+v, want a and b", nodes)
	}
	b := nodes[1]
	if !b.StartedTime.Equal(t0) || !b.RenewedTime.Equal(t0.Add(5*time.Second)) || !b.LeaseUntil.Equal(t0.Add(20*time.Second)) ||
		b.ConnectedDevices != 3 || b.RESTAddress != "127.0.0.1:443" || b.MQTTAddress != "127.0.0.1:8883" || b.Version != "v1" ||
		!b.StoppedTime.IsZero() {
		t.Errorf("renewed node %+v", b)
	}
	if cluster.StateAt(b, t0.Add(19*time.Second)) != herd.NodeAlive || cluster.StateAt(b, t0.Add(20*time.Second)) != herd.NodeLost {
		t.Errorf("states of %+v", b)
	}
	stop := t0.Add(8 * time.Second)
	if err := s.StopNode(ctx, "b", stop); err != nil {
		t.Fatal(err)
	}
	nodes, _ = s.Nodes(ctx)
	if b := nodes[1]; !b.StoppedTime.Equal(stop) || !b.LeaseUntil.Equal(stop) || cluster.StateAt(b, stop) != herd.NodeStopped {
		t.Errorf("stopped node %+v", b)
	}
	// Started again: the stop is cleared.
	t1 := t0.Add(time.Minute)
	if err := s.RenewNode(ctx, lease("b", t1, t1, 0)); err != nil {
		t.Fatal(err)
	}
	nodes, _ = s.Nodes(ctx)
	if b := nodes[1]; !b.StoppedTime.IsZero() || !b.StartedTime.Equal(t1) || cluster.StateAt(b, t1) != herd.NodeAlive {
		t.Errorf("restarted node %+v", b)
	}
	// a's lease ended at t0+15s, b's runs to t1+15s.
	if n, err := s.PurgeNodes(ctx, t0.Add(15*time.Second)); err != nil || n != 0 {
		t.Errorf("purge at a's lease end: %d, %v", n, err)
	}
	if n, err := s.PurgeNodes(ctx, t1); err != nil || n != 1 {
		t.Errorf("purge after a's lease: %d, %v", n, err)
	}
	if nodes, _ = s.Nodes(ctx); len(nodes) != 1 || nodes[0].NodeID != "b" {
		t.Errorf("after the purge: %+v", nodes)
	}
}
