// Package storetest is the conformance suite every Herd store passes: one
// set of behaviours (transactions, error codes, round trips) checked
// against any implementation of the domain packages' Store interfaces.
// The SQLite store runs it in its tests; a PostgreSQL store will too.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// Store is everything a complete Herd store implements: what a hub keeps
// (hub.Store) and, for the tests, a job's device records.
type Store interface {
	hub.Store
	// DeviceJobs returns a job's device records in device order.
	DeviceJobs(ctx context.Context, id string) ([]herd.DeviceJob, error)
}

// JobStore is the store the job tests take (every Store is one).
type JobStore = Store

// Run runs the whole suite. open returns a new, empty store for each
// subtest (the store is closed when the subtest ends).
func Run(t *testing.T, open func(t *testing.T) Store) {
	groups := []struct {
		name  string
		tests []struct {
			name string
			fn   func(*testing.T, Store)
		}
	}{
		{"Registry", registryTests},
		{"Modules", moduleTests},
		{"Jobs", jobTests},
		{"Hub", hubTests},
		{"CACertificates", caTests},
		{"Queries", queryTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, open(t))
				})
			}
		})
	}
}

var registryTests = []struct {
	name string
	fn   func(*testing.T, Store)
}{
	{"CreateAndGet", testCreateAndGet},
	{"CreateDuplicate", testCreateDuplicate},
	{"UpdateBumpsETag", testUpdate},
	{"FailedOpWritesNothing", testFailedOp},
	{"BatchIsolatesFailures", testBatch},
	{"CreateIfMissing", testCreateIfMissing},
	{"Delete", testDelete},
	{"ListAndStatistics", testListAndStatistics},
	{"ConnectionStates", testConnectionStates},
	{"Activity", testActivity},
	{"TwinRoundTrip", testTwinRoundTrip},
	{"TwinFailedUpdateWritesNothing", testTwinFailedUpdate},
	{"Policies", testPolicies},
}

var t0 = time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)

func device(id string) *herd.Device {
	reason := "provisioned"
	thumb := "ABCDEF"
	return &herd.Device{
		DeviceID:     id,
		GenerationID: "637000000000000001",
		Status:       herd.DeviceEnabled,
		StatusReason: &reason,
		Authentication: herd.Authentication{
			Type:           herd.AuthSAS,
			SymmetricKey:   herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()},
			X509Thumbprint: herd.X509Thumbprint{SecondaryThumbprint: &thumb},
		},
		Capabilities: herd.Capabilities{IoTEdge: true},
		DeviceScope:  "scope",
		ParentScopes: []string{"p1"},
	}
}

func create(t *testing.T, s Store, ids ...string) {
	t.Helper()
	ops := make([]registry.Op, len(ids))
	for i, id := range ids {
		ops[i] = registry.Op{Kind: registry.OpCreate, DeviceID: id, Device: device(id), Twin: twin.NewDoc(t0)}
	}
	res, err := s.ApplyDevices(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("create %s: %v", ids[i], r.Err)
		}
	}
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testCreateAndGet(t *testing.T, s Store) {
	ctx := context.Background()
	want := device("dev-1")
	res, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpCreate, DeviceID: "dev-1", Device: want, Twin: twin.NewDoc(t0)}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("create: %v %v", err, res[0].Err)
	}
	got, err := s.Device(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	want.ETag = "MQ=="
	want.ConnectionState = herd.Disconnected
	if asJSON(t, got) != asJSON(t, want) {
		t.Errorf("device round trip:\n got  %s\n want %s", asJSON(t, got), asJSON(t, want))
	}
	if asJSON(t, res[0].Device) != asJSON(t, want) {
		t.Errorf("create result:\n got  %s\n want %s", asJSON(t, res[0].Device), asJSON(t, want))
	}
	if _, err := s.Device(ctx, "nope"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("unknown device: %v, want DeviceNotFound", err)
	}
	// Many at once: the same devices, only those that exist, a repeated
	// id once.
	many, err := s.DevicesByID(ctx, []string{"nope", "dev-1", "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(many) != 1 || many["dev-1"] == nil || asJSON(t, many["dev-1"]) != asJSON(t, want) {
		t.Errorf("DevicesByID(nope, dev-1, dev-1) = %v, want dev-1 as Device reads it", many)
	}
	if none, err := s.DevicesByID(ctx, nil); err != nil || len(none) != 0 {
		t.Errorf("DevicesByID(no ids) = %v, %v", none, err)
	}
}

func testCreateDuplicate(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "d")
	before, _ := s.Device(ctx, "d")
	res, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpCreate, DeviceID: "d", Device: device("d"), Twin: twin.NewDoc(t0)}})
	if err != nil {
		t.Fatal(err)
	}
	if !herd.IsCode(res[0].Err, herd.ErrDeviceAlreadyExists) {
		t.Fatalf("duplicate create: %v, want DeviceAlreadyExists", res[0].Err)
	}
	after, _ := s.Device(ctx, "d")
	if asJSON(t, before) != asJSON(t, after) {
		t.Error("a refused create changed the existing device")
	}
}

func testUpdate(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "d")
	res, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpUpdate, DeviceID: "d", Change: func(cur *herd.Device) error {
		cur.Status = herd.DeviceDisabled
		cur.StatusUpdatedTime = herd.NewTime(t0)
		cur.Capabilities.IoTEdge = false
		return nil
	}}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("update: %v %v", err, res[0].Err)
	}
	got, _ := s.Device(ctx, "d")
	if got.Status != herd.DeviceDisabled || got.Capabilities.IoTEdge || !got.StatusUpdatedTime.Equal(t0) {
		t.Errorf("update not stored: %+v", got)
	}
	if got.ETag != "Mg==" || res[0].Device.ETag != "Mg==" {
		t.Errorf("etag after one update = %s (result %s), want Mg==", got.ETag, res[0].Device.ETag)
	}
	res, _ = s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpUpdate, DeviceID: "nope", Change: func(*herd.Device) error { return nil }}})
	if !herd.IsCode(res[0].Err, herd.ErrDeviceNotFound) {
		t.Errorf("update unknown: %v, want DeviceNotFound", res[0].Err)
	}
}

func testFailedOp(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "d")
	before, _ := s.Device(ctx, "d")
	boom := herd.Errorf(herd.ErrPreconditionFailed, "stale")
	res, err := s.ApplyDevices(ctx, []registry.Op{
		{Kind: registry.OpUpdate, DeviceID: "d", Change: func(cur *herd.Device) error { cur.Status = herd.DeviceDisabled; return boom }},
		{Kind: registry.OpDelete, DeviceID: "d", Change: func(*herd.Device) error { return boom }},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !errors.Is(r.Err, boom) {
			t.Errorf("op %d: %v, want the Change error", i, r.Err)
		}
	}
	after, err := s.Device(ctx, "d")
	if err != nil || asJSON(t, before) != asJSON(t, after) {
		t.Errorf("failed ops changed the device: %v", err)
	}
}

func testBatch(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "a")
	res, err := s.ApplyDevices(ctx, []registry.Op{
		{Kind: registry.OpCreate, DeviceID: "b", Device: device("b"), Twin: twin.NewDoc(t0)},
		{Kind: registry.OpCreate, DeviceID: "a", Device: device("a"), Twin: twin.NewDoc(t0)},
		{Kind: registry.OpDelete, DeviceID: "zz", Change: func(*herd.Device) error { return nil }},
		{Kind: registry.OpDelete, DeviceID: "a", Change: func(*herd.Device) error { return nil }},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []herd.ErrorCode{"", herd.ErrDeviceAlreadyExists, herd.ErrDeviceNotFound, ""}
	for i, r := range res {
		if herd.ErrorCodeOf(r.Err) != want[i] {
			t.Errorf("op %d: %v, want %q", i, r.Err, want[i])
		}
	}
	if _, err := s.Device(ctx, "b"); err != nil {
		t.Errorf("b not created: %v", err)
	}
	if _, err := s.Device(ctx, "a"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("a not deleted: %v", err)
	}
}

func testCreateIfMissing(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "old")
	touch := func(cur *herd.Device) error { cur.DeviceScope = "updated"; return nil }
	res, err := s.ApplyDevices(ctx, []registry.Op{
		{Kind: registry.OpUpdate, DeviceID: "old", Change: touch, CreateIfMissing: true, Device: device("old"), Twin: twin.NewDoc(t0)},
		{Kind: registry.OpUpdate, DeviceID: "new", Change: touch, CreateIfMissing: true, Device: device("new"), Twin: twin.NewDoc(t0)},
	})
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("%v %+v", err, res)
	}
	old, _ := s.Device(ctx, "old")
	fresh, _ := s.Device(ctx, "new")
	if old.DeviceScope != "updated" || old.ETag != "Mg==" {
		t.Errorf("existing device not updated: %+v", old)
	}
	if fresh == nil || fresh.DeviceScope != "scope" || fresh.ETag != "MQ==" {
		t.Errorf("missing device not created: %+v", fresh)
	}
}

func testDelete(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "d")
	res, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpDelete, DeviceID: "d", Change: func(*herd.Device) error { return nil }}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("delete: %v %v", err, res[0].Err)
	}
	if _, _, err := s.Twin(ctx, "d"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("twin after delete: %v, want DeviceNotFound", err)
	}
	create(t, s, "d") // the id can be reused
}

func testListAndStatistics(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "c", "a", "b")
	_, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpUpdate, DeviceID: "b", Change: func(cur *herd.Device) error {
		cur.Status = herd.DeviceDisabled
		return nil
	}}})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := s.Devices(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].DeviceID != "a" || ds[1].DeviceID != "b" {
		t.Errorf("Devices(2) = %v, want a, b", ds)
	}
	st, err := s.RegistryStatistics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st != (herd.RegistryStatistics{TotalDeviceCount: 3, EnabledDeviceCount: 2, DisabledDeviceCount: 1}) {
		t.Errorf("statistics = %+v", st)
	}
}

func testConnectionStates(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "a", "b")
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	err := s.SetConnectionStates(ctx, []registry.ConnectionChange{
		{DeviceID: "a", State: herd.Connected, StateAt: t1, ActivityAt: t2},
		{DeviceID: "b", ActivityAt: t1},
		{DeviceID: "gone", State: herd.Connected, StateAt: t1}, // deleted meanwhile: ignored
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Device(ctx, "a")
	b, _ := s.Device(ctx, "b")
	if a.ConnectionState != herd.Connected || !a.ConnectionStateUpdatedTime.Equal(t1) || !a.LastActivityTime.Equal(t2) {
		t.Errorf("a = %s %v %v", a.ConnectionState, a.ConnectionStateUpdatedTime, a.LastActivityTime)
	}
	if b.ConnectionState != herd.Disconnected || !b.LastActivityTime.Equal(t1) {
		t.Errorf("b = %s %v", b.ConnectionState, b.LastActivityTime)
	}
	// Activity never moves backwards.
	if err := s.SetConnectionStates(ctx, []registry.ConnectionChange{{DeviceID: "a", ActivityAt: t0}}); err != nil {
		t.Fatal(err)
	}
	if a, _ = s.Device(ctx, "a"); !a.LastActivityTime.Equal(t2) {
		t.Errorf("lastActivityTime went back to %v", a.LastActivityTime)
	}
}

// Activity without a connection change is kept apart from the device's
// row (migration 0170 of the SQLite store): every read of
// lastActivityTime (the device, its twin, a batch, a query's condition
// and its results, a module) takes the later of the two, and it goes
// with the device.
func testActivity(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "a", "b")
	if _, err := s.CreateModule(ctx, newModule("a", "m"), twin.NewDoc(t0)); err != nil {
		t.Fatal(err)
	}
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	record := func(changes ...registry.ConnectionChange) {
		t.Helper()
		if err := s.SetConnectionStates(ctx, changes); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, want map[string]int) {
		t.Helper()
		devs, _, err := s.DevicesAndSessions(ctx, []string{"a", "b"})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"a", "b"} {
			d, err := s.Device(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			td, _, err := s.Twin(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			w := herd.NewTime(at(want[id]))
			if want[id] < 0 {
				w = herd.Time{}
			}
			for how, got := range map[string]herd.Time{"Device": d.LastActivityTime, "Twin": td.LastActivityTime, "DevicesAndSessions": devs[id].LastActivityTime} {
				if !got.Equal(w.Time) {
					t.Errorf("%s: %s(%s).lastActivityTime = %v, want %v", what, how, id, got, w)
				}
			}
		}
		m, err := s.Module(ctx, "a", "m")
		if err != nil {
			t.Fatal(err)
		}
		w := herd.NewTime(at(want["a/m"]))
		if want["a/m"] < 0 {
			w = herd.Time{}
		}
		if !m.LastActivityTime.Equal(w.Time) {
			t.Errorf("%s: module a/m lastActivityTime = %v, want %v", what, m.LastActivityTime, w)
		}
	}
	query := func(text string) []string {
		t.Helper()
		res, err := query.NewService(s).Run(ctx, text, 100, "")
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		var out []string
		for _, it := range res.Items {
			tw := it.(*herd.Twin)
			out = append(out, tw.DeviceID+"/"+tw.ModuleID+"@"+tw.LastActivityTime.String())
		}
		return out
	}
	record(registry.ConnectionChange{DeviceID: "a", State: herd.Connected, StateAt: at(1), ActivityAt: at(1)},
		registry.ConnectionChange{DeviceID: "a/m", State: herd.Connected, StateAt: at(1), ActivityAt: at(1)})
	expect("connected", map[string]int{"a": 1, "b": -1, "a/m": 1})
	// Activity alone, twice for a device in one batch, and of devices
	// and modules that do not exist.
	record(registry.ConnectionChange{DeviceID: "a", ActivityAt: at(3)}, registry.ConnectionChange{DeviceID: "a", ActivityAt: at(5)},
		registry.ConnectionChange{DeviceID: "a", ActivityAt: at(4)}, registry.ConnectionChange{DeviceID: "b", ActivityAt: at(2)},
		registry.ConnectionChange{DeviceID: "a/m", ActivityAt: at(6)},
		registry.ConnectionChange{DeviceID: "ghost", ActivityAt: at(2)}, registry.ConnectionChange{DeviceID: "a/ghost", ActivityAt: at(2)})
	expect("active", map[string]int{"a": 5, "b": 2, "a/m": 6})
	if got, want := fmt.Sprint(query("SELECT * FROM devices WHERE lastActivityTime > '"+herd.NewTime(at(4)).String()+"'")),
		"[a/@"+herd.NewTime(at(5)).String()+"]"; got != want {
		t.Errorf("devices active after minute 4: %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(query("SELECT * FROM devices.modules WHERE lastActivityTime > '"+herd.NewTime(at(5)).String()+"'")),
		"[a/m@"+herd.NewTime(at(6)).String()+"]"; got != want {
		t.Errorf("modules active after minute 5: %s, want %s", got, want)
	}
	// A connection change with older activity does not move it back;
	// older activity alone does not either; a newer one in the row wins.
	record(registry.ConnectionChange{DeviceID: "a", State: herd.Disconnected, StateAt: at(7), ActivityAt: at(2)},
		registry.ConnectionChange{DeviceID: "a/m", ActivityAt: at(2)},
		registry.ConnectionChange{DeviceID: "b", State: herd.Connected, StateAt: at(8), ActivityAt: at(8)})
	expect("older activity", map[string]int{"a": 5, "b": 8, "a/m": 6})
	// A device made again under the same id starts without activity.
	res, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpDelete, DeviceID: "a", Change: func(*herd.Device) error { return nil }}})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	create(t, s, "a")
	if _, err := s.CreateModule(ctx, newModule("a", "m"), twin.NewDoc(t0)); err != nil {
		t.Fatal(err)
	}
	expect("made again", map[string]int{"a": -1, "b": 8, "a/m": -1})
}

func testTwinRoundTrip(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "d")
	p, err := twin.ParseService([]byte(`{"tags":{"big":4503599627370495,"f":1.5,"s":"x","b":true,"arr":[1,"a",{"k":null}]},"properties":{"desired":{"o":{"n":-3}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	_, written, err := s.UpdateTwin(ctx, "d", func(_ *herd.Device, d *twin.Doc) error {
		_, err := d.Apply(p, false, t0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	dev, got, err := s.Twin(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if dev.DeviceID != "d" {
		t.Errorf("identity with twin: %+v", dev)
	}
	if asJSON(t, got) != asJSON(t, written) {
		t.Errorf("twin round trip:\n got  %s\n want %s", asJSON(t, got), asJSON(t, written))
	}
	if asJSON(t, got.Tags["big"]) != "4503599627370495" {
		t.Errorf("large integer came back as %s", asJSON(t, got.Tags["big"]))
	}
	if _, _, err := s.UpdateTwin(ctx, "nope", func(*herd.Device, *twin.Doc) error { return nil }); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("update twin of unknown device: %v", err)
	}
}

func testTwinFailedUpdate(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "d")
	_, before, _ := s.Twin(ctx, "d")
	boom := herd.Errorf(herd.ErrPreconditionFailed, "stale")
	_, _, err := s.UpdateTwin(ctx, "d", func(_ *herd.Device, d *twin.Doc) error {
		d.Tags["x"] = json.Number("1")
		d.ETag++
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateTwin returned %v, want the callback's error", err)
	}
	_, after, _ := s.Twin(ctx, "d")
	if asJSON(t, before) != asJSON(t, after) {
		t.Error("a failed twin update was written")
	}
}

func testPolicies(t *testing.T, s Store) {
	ctx := context.Background()
	ps, err := s.Policies(ctx)
	if err != nil || len(ps) != 0 {
		t.Fatalf("new store has policies %v (%v)", ps, err)
	}
	want := auth.DefaultPolicies()
	if err := s.CreatePolicies(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Policies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]auth.Policy{}
	for _, p := range got {
		byName[p.Name] = p
	}
	for _, p := range want {
		if byName[p.Name] != p {
			t.Errorf("policy %s: got %+v, want %+v", p.Name, byName[p.Name], p)
		}
	}
}
