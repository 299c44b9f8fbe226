package storetest

import (
	"context"
	"reflect"
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
	{"ConnectionNodes", testConnectionNodes},
	{"DisconnectNodes", testDisconnectNodes},
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
	// Many at once: those that have one.
	many, err := s.Sessions(ctx, []string{"a", "b", "ghost", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(many) != 2 || many["a"] != bus.Methods|bus.Desired || many["b"] != bus.TwinResponses {
		t.Errorf("Sessions(a, b, ghost, c) = %v, want a and b", many)
	}
	// With the devices' keys, in one read: every device that exists, and
	// the sessions of those that have one.
	devs, subs, err := s.DevicesAndSessions(ctx, []string{"a", "b", "ghost", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs["a"] == nil || devs["b"] == nil || devs["a"].Authentication.SymmetricKey.PrimaryKey == "" {
		t.Errorf("DevicesAndSessions(a, b, ghost, c) devices = %v, want a and b with their keys", devs)
	}
	if len(subs) != 2 || subs["a"] != bus.Methods|bus.Desired || subs["b"] != bus.TwinResponses {
		t.Errorf("DevicesAndSessions(a, b, ghost, c) sessions = %v, want a's and b's", subs)
	}
	if d, err := s.Device(ctx, "a"); err != nil || !reflect.DeepEqual(d, devs["a"]) {
		t.Errorf("DevicesAndSessions read a as %+v, Device as %+v (%v)", devs["a"], d, err)
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
	if devs, subs, err := s.DevicesAndSessions(ctx, []string{"a", "b"}); err != nil || len(devs) != 2 || len(subs) != 1 || subs["a"] != 0 {
		t.Errorf("DevicesAndSessions(a, b) after a's empty set and b's delete = %v, %v, %v; want both devices, a's empty session", devs, subs, err)
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

// testConnectionNodes: a connection is recorded with its node. Connected
// moves a device (or module) to the change's node; a disconnect from a
// node the device has left changes its activity, not its state.
func testConnectionNodes(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "a")
	if _, err := s.CreateModule(ctx, newModule("a", "m"), twin.NewDoc(t0)); err != nil {
		t.Fatal(err)
	}
	mod := herd.ModuleIdentity("a", "m")
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	record := func(id, node string, state herd.ConnectionState, m int) {
		t.Helper()
		c := registry.ConnectionChange{DeviceID: id, Node: node, State: state, ActivityAt: at(m)}
		if state != "" {
			c.StateAt = at(m)
		}
		if err := s.SetConnectionStates(ctx, []registry.ConnectionChange{c}); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, state herd.ConnectionState, stateAt, activity int) {
		t.Helper()
		d, err := s.Device(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.Module(ctx, "a", "m")
		if err != nil {
			t.Fatal(err)
		}
		for _, got := range []struct {
			who              string
			state            herd.ConnectionState
			stateAt, lastAct herd.Time
		}{{"device", d.ConnectionState, d.ConnectionStateUpdatedTime, d.LastActivityTime}, {"module", m.ConnectionState, m.ConnectionStateUpdatedTime, m.LastActivityTime}} {
			if got.state != state || !got.stateAt.Equal(at(stateAt)) || !got.lastAct.Equal(at(activity)) {
				t.Errorf("%s, %s: %s since %v, active %v; want %s since %v, active %v", what, got.who,
					got.state, got.stateAt, got.lastAct, state, at(stateAt), at(activity))
			}
		}
	}
	for _, id := range []string{"a", mod} {
		record(id, "n1", herd.Connected, 1)
	}
	expect("connected on n1", herd.Connected, 1, 1)
	for _, id := range []string{"a", mod} {
		record(id, "n2", herd.Connected, 2) // reconnected to n2
		record(id, "n1", herd.Disconnected, 3)
	}
	expect("moved to n2, then n1's disconnect", herd.Connected, 2, 3)
	for _, id := range []string{"a", mod} {
		if node, err := s.ConnectedNode(ctx, id); err != nil || node != "n2" {
			t.Errorf("the node of %s: %q %v, want n2", id, node, err)
		}
	}
	for _, id := range []string{"a", mod} {
		record(id, "n1", "", 4) // activity only, from any node
	}
	expect("activity", herd.Connected, 2, 4)
	for _, id := range []string{"a", mod} {
		record(id, "n2", herd.Disconnected, 5)
	}
	expect("n2's disconnect", herd.Disconnected, 5, 5)
	for _, id := range []string{"a", mod, "nobody"} {
		if node, err := s.ConnectedNode(ctx, id); err != nil || node != "" {
			t.Errorf("the node of %s, not connected: %q %v", id, node, err)
		}
	}
	for _, id := range []string{"a", mod} {
		record(id, "n1", herd.Disconnected, 6) // late, from a node it left long ago
	}
	expect("a late disconnect", herd.Disconnected, 5, 6)
}

// testDisconnectNodes: the connections of one node, or of every node that
// holds no live lease, are marked Disconnected; the others are not.
func testDisconnectNodes(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "on-live", "on-lost", "on-stopped", "on-unknown", "on-legacy", "off")
	if _, err := s.CreateModule(ctx, newModule("on-live", "m"), twin.NewDoc(t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateModule(ctx, newModule("on-lost", "m"), twin.NewDoc(t0)); err != nil {
		t.Fatal(err)
	}
	var changes []registry.ConnectionChange
	for id, node := range map[string]string{"on-live": "live", "on-live/m": "live", "on-lost": "lost", "on-lost/m": "lost",
		"on-stopped": "stopped", "on-unknown": "unknown", "on-legacy": ""} {
		changes = append(changes, registry.ConnectionChange{DeviceID: id, Node: node, State: herd.Connected, StateAt: t0, ActivityAt: t0})
	}
	if err := s.SetConnectionStates(ctx, changes); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Hour)
	for _, l := range []cluster.Lease{
		{NodeID: "live", StartedTime: t0, RenewedTime: now, LeaseUntil: now.Add(15 * time.Second)},
		{NodeID: "lost", StartedTime: t0, RenewedTime: t0, LeaseUntil: now.Add(-time.Second)},
		{NodeID: "stopped", StartedTime: t0, RenewedTime: now, LeaseUntil: now.Add(15 * time.Second)},
	} {
		if err := s.RenewNode(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.StopNode(ctx, "stopped", now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	state := func(id string) herd.ConnectionState {
		t.Helper()
		dev, mod := herd.SplitIdentity(id)
		if mod != "" {
			m, err := s.Module(ctx, dev, mod)
			if err != nil {
				t.Fatal(err)
			}
			return m.ConnectionState
		}
		d, err := s.Device(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		return d.ConnectionState
	}
	expect := func(what string, connected ...string) {
		t.Helper()
		want := map[string]bool{}
		for _, id := range connected {
			want[id] = true
		}
		for _, id := range []string{"on-live", "on-live/m", "on-lost", "on-lost/m", "on-stopped", "on-unknown", "on-legacy", "off"} {
			if got := state(id) == herd.Connected; got != want[id] {
				t.Errorf("%s: %s is %s", what, id, state(id))
			}
		}
	}
	expect("before", "on-live", "on-live/m", "on-lost", "on-lost/m", "on-stopped", "on-unknown", "on-legacy")

	if n, err := s.DisconnectNode(ctx, "lost", now); err != nil || n != 2 {
		t.Errorf("disconnect node lost: %d %v, want 2", n, err)
	}
	expect("node lost disconnected", "on-live", "on-live/m", "on-stopped", "on-unknown", "on-legacy")
	if n, err := s.DisconnectNode(ctx, "lost", now); err != nil || n != 0 {
		t.Errorf("disconnect node lost again: %d %v, want 0", n, err)
	}
	if n, err := s.DisconnectOrphans(ctx, now); err != nil || n != 3 {
		t.Errorf("disconnect orphans: %d %v, want 3", n, err)
	}
	expect("orphans disconnected", "on-live", "on-live/m")
	d, _ := s.Device(ctx, "on-unknown")
	if !d.ConnectionStateUpdatedTime.Equal(now) || !d.LastActivityTime.Equal(t0) {
		t.Errorf("an orphan: state since %v, active %v; want %v, %v", d.ConnectionStateUpdatedTime, d.LastActivityTime, now, t0)
	}
	off, _ := s.Device(ctx, "off")
	if !off.ConnectionStateUpdatedTime.IsZero() {
		t.Errorf("a device that was not connected changed: %v", off.ConnectionStateUpdatedTime)
	}
	// Once the live node's lease lapses, its devices are orphans too.
	if n, err := s.DisconnectOrphans(ctx, now.Add(time.Minute)); err != nil || n != 2 {
		t.Errorf("disconnect orphans after the lease lapsed: %d %v, want 2", n, err)
	}
	expect("every lease lapsed")
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
			Info: cluster.Info{RESTAddress: "127.0.0.1:443", MQTTAddress: "127.0.0.1:8883", Version: "v1", ConnectedDevices: connected,
				Leader: connected == 3, RunningJobs: int(connected)}}
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
		b.ConnectedDevices != 3 || !b.Leader || b.RunningJobs != 3 || nodes[0].Leader || b.RESTAddress != "127.0.0.1:443" || b.MQTTAddress != "127.0.0.1:8883" || b.Version != "v1" ||
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
	if b := nodes[1]; !b.StoppedTime.Equal(stop) || !b.LeaseUntil.Equal(stop) || cluster.StateAt(b, stop) != herd.NodeStopped || b.Leader || b.RunningJobs != 0 {
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
