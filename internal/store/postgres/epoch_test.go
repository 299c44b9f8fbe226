package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// TestConnectionEpochs: a claim records a connection as its node's and
// raises the device's (or module's) epoch; afterwards the writes about an
// older connection — its state, its session — change nothing, those of
// the current one apply, and writes without an epoch (a node alone) keep
// the node rule.
func TestConnectionEpochs(t *testing.T) {
	db := openDB(t)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	sas := herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()}}
	var ops []registry.Op
	for _, id := range []string{"d", "gw"} {
		ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: twin.NewDoc(t0),
			Device: &herd.Device{DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled, Authentication: sas}})
	}
	if res, err := db.ApplyDevices(ctx, ops); err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatal(err, res)
	}
	if _, err := db.CreateModule(ctx, &herd.Module{DeviceID: "gw", ModuleID: "cam", GenerationID: "2", Authentication: sas}, twin.NewDoc(t0)); err != nil {
		t.Fatal(err)
	}
	claim := func(node string, at time.Time, ids ...string) map[string]int64 {
		t.Helper()
		got, err := db.ClaimConnections(ctx, node, ids, at)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	state := func(id string) herd.ConnectionState {
		t.Helper()
		if dev, mod := herd.SplitIdentity(id); mod != "" {
			m, err := db.Module(ctx, dev, mod)
			if err != nil {
				t.Fatal(err)
			}
			return m.ConnectionState
		}
		d, err := db.Device(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.ConnectionState
	}
	session := func(id string) (bus.Feature, bool) {
		t.Helper()
		subs, found, err := db.Session(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return subs, found
	}
	record := func(cs ...registry.ConnectionChange) {
		t.Helper()
		if err := db.SetConnectionStates(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	save := func(cs ...bus.SessionChange) {
		t.Helper()
		if err := db.SaveSessions(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}

	// Node a claims d and gw/cam; "ghost" is not registered.
	onA := claim("a", t0, "d", "gw/cam", "ghost", "gw/nope")
	if len(onA) != 2 || onA["d"] == 0 || onA["gw/cam"] == 0 {
		t.Fatalf("claims on a = %v, want epochs for d and gw/cam only", onA)
	}
	if state("d") != herd.Connected || state("gw/cam") != herd.Connected {
		t.Fatal("a claim did not record the connection")
	}
	save(bus.SessionChange{DeviceID: "d", Subscriptions: bus.Methods, Epoch: onA["d"]},
		bus.SessionChange{DeviceID: "gw/cam", Subscriptions: bus.Methods, Epoch: onA["gw/cam"]})
	// The devices move to node b.
	onB := claim("b", t0.Add(time.Second), "d", "gw/cam")
	if onB["d"] <= onA["d"] || onB["gw/cam"] <= onA["gw/cam"] {
		t.Fatalf("epochs on b %v are not above a's %v", onB, onA)
	}
	save(bus.SessionChange{DeviceID: "d", Subscriptions: bus.Methods | bus.Desired, Epoch: onB["d"]})
	// a's late writes: a session change, a delete, a disconnect and a
	// stray Connected change nothing.
	save(bus.SessionChange{DeviceID: "d", Subscriptions: bus.C2D, Epoch: onA["d"]},
		bus.SessionChange{DeviceID: "gw/cam", Delete: true, Epoch: onA["gw/cam"]})
	if subs, found := session("d"); !found || subs != bus.Methods|bus.Desired {
		t.Errorf("d's session = %v, %v after a's late write; want b's Methods|Desired", subs, found)
	}
	if subs, found := session("gw/cam"); !found || subs != bus.Methods {
		t.Errorf("gw/cam's session = %v, %v after a's late delete; want it kept", subs, found)
	}
	save(bus.SessionChange{DeviceID: "d", Delete: true, Epoch: onA["d"]})
	if _, found := session("d"); !found {
		t.Error("a's late delete of d's session applied")
	}
	late := t0.Add(2 * time.Second)
	record(registry.ConnectionChange{DeviceID: "d", Node: "a", State: herd.Disconnected, StateAt: late, ActivityAt: late, Epoch: onA["d"]},
		registry.ConnectionChange{DeviceID: "gw/cam", Node: "a", State: herd.Connected, StateAt: late, ActivityAt: late, Epoch: onA["gw/cam"]})
	if state("d") != herd.Connected {
		t.Error("a's late disconnect of d applied: d is connected on b")
	}
	if d, _ := db.Device(ctx, "d"); !d.LastActivityTime.Equal(late) {
		t.Errorf("d's activity %v: a late change's activity is still recorded (%v)", d.LastActivityTime, late)
	}
	// b's own disconnect applies.
	record(registry.ConnectionChange{DeviceID: "d", Node: "b", State: herd.Disconnected, StateAt: late, ActivityAt: late, Epoch: onB["d"]},
		registry.ConnectionChange{DeviceID: "gw/cam", Node: "b", State: herd.Disconnected, StateAt: late, ActivityAt: late, Epoch: onB["gw/cam"]})
	if state("d") != herd.Disconnected || state("gw/cam") != herd.Disconnected {
		t.Error("the current connection's disconnect did not apply")
	}
	// And b's own session writes.
	save(bus.SessionChange{DeviceID: "d", Delete: true, Epoch: onB["d"]})
	if _, found := session("d"); found {
		t.Error("the current connection's session delete did not apply")
	}
	// Without epochs (a node alone) the node rule holds as before.
	record(registry.ConnectionChange{DeviceID: "gw", Node: "solo", State: herd.Connected, StateAt: late, ActivityAt: late})
	record(registry.ConnectionChange{DeviceID: "gw", Node: "other", State: herd.Disconnected, StateAt: late, ActivityAt: late})
	if state("gw") != herd.Connected {
		t.Error("a disconnect from another node applied without epochs")
	}
	record(registry.ConnectionChange{DeviceID: "gw", Node: "solo", State: herd.Disconnected, StateAt: late, ActivityAt: late})
	if state("gw") != herd.Disconnected {
		t.Error("the node's own disconnect did not apply without epochs")
	}
	save(bus.SessionChange{DeviceID: "gw", Subscriptions: bus.C2D})
	if subs, found := session("gw"); !found || subs != bus.C2D {
		t.Errorf("a session write without an epoch did not apply: %v %v", subs, found)
	}
}
