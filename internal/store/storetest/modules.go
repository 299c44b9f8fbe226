package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

var moduleTests = []struct {
	name string
	fn   func(*testing.T, Store)
}{
	{"Lifecycle", testModuleLifecycle},
	{"DeletedWithDevice", testModulesDeletedWithDevice},
	{"Limit", testModuleLimit},
	{"Queries", testModuleQueries},
}

func newModule(deviceID, moduleID string) *herd.Module {
	return &herd.Module{DeviceID: deviceID, ModuleID: moduleID, GenerationID: "42",
		Authentication: herd.Authentication{Type: herd.AuthSAS,
			SymmetricKey: herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()}}}
}

// A module is created on an existing device, read, listed, updated with
// its etag moving on, and deleted; each error names what is missing.
func testModuleLifecycle(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "edge")
	m, err := s.CreateModule(ctx, newModule("edge", "$edgeAgent"), twin.NewDoc(t0))
	if err != nil || m.ETag != registry.ETagString(1) || m.ConnectionState != herd.Disconnected {
		t.Fatalf("create: %+v %v", m, err)
	}
	if _, err := s.CreateModule(ctx, newModule("edge", "$edgeAgent"), twin.NewDoc(t0)); !herd.IsCode(err, herd.ErrModuleAlreadyExists) {
		t.Errorf("create twice: %v", err)
	}
	if _, err := s.CreateModule(ctx, newModule("nobody", "m"), twin.NewDoc(t0)); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("create on an unknown device: %v", err)
	}
	want := newModule("edge", "sensor")
	want.ManagedBy = "IotEdge"
	if _, err := s.CreateModule(ctx, want, twin.NewDoc(t0)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Module(ctx, "edge", "sensor")
	if err != nil || got.ManagedBy != "IotEdge" || got.GenerationID != "42" ||
		got.Authentication.SymmetricKey != want.Authentication.SymmetricKey || got.Authentication.Type != herd.AuthSAS {
		t.Errorf("get: %+v %v", got, err)
	}
	if _, err := s.Module(ctx, "edge", "nope"); !herd.IsCode(err, herd.ErrModuleNotFound) {
		t.Errorf("get unknown module: %v", err)
	}
	if _, err := s.Module(ctx, "nobody", "sensor"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("get on an unknown device: %v", err)
	}
	list, err := s.Modules(ctx, "edge")
	if err != nil || len(list) != 2 || list[0].ModuleID != "$edgeAgent" || list[1].ModuleID != "sensor" {
		t.Errorf("list: %v %v", list, err)
	}
	create(t, s, "bare")
	if list, err := s.Modules(ctx, "bare"); err != nil || list == nil || len(list) != 0 {
		t.Errorf("list of a device without modules: %v %v", list, err)
	}
	if _, err := s.Modules(ctx, "nobody"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("list on an unknown device: %v", err)
	}
	thumb := fmt.Sprintf("%040X", 7)
	up, err := s.UpdateModule(ctx, "edge", "sensor", func(cur *herd.Module) error {
		cur.ManagedBy = ""
		cur.Authentication = herd.Authentication{Type: herd.AuthSelfSigned, X509Thumbprint: herd.X509Thumbprint{PrimaryThumbprint: &thumb}}
		return nil
	})
	if err != nil || up.ETag != registry.ETagString(2) || up.ManagedBy != "" {
		t.Fatalf("update: %+v %v", up, err)
	}
	got, _ = s.Module(ctx, "edge", "sensor")
	if got.ETag != up.ETag || got.Authentication.Type != herd.AuthSelfSigned || *got.Authentication.X509Thumbprint.PrimaryThumbprint != thumb ||
		got.Authentication.SymmetricKey.PrimaryKey != "" {
		t.Errorf("after the update: %+v", got)
	}
	refused := herd.Errorf(herd.ErrPreconditionFailed, "no")
	if _, err := s.UpdateModule(ctx, "edge", "sensor", func(*herd.Module) error { return refused }); err != refused {
		t.Errorf("a refused update: %v", err)
	}
	if got, _ := s.Module(ctx, "edge", "sensor"); got.ETag != up.ETag {
		t.Error("a refused update was written")
	}
	if _, err := s.UpdateModule(ctx, "edge", "nope", func(*herd.Module) error { return nil }); !herd.IsCode(err, herd.ErrModuleNotFound) {
		t.Errorf("update unknown: %v", err)
	}
	if err := s.DeleteModule(ctx, "edge", "sensor", func(*herd.Module) error { return refused }); err != refused {
		t.Errorf("a refused delete: %v", err)
	}
	if err := s.DeleteModule(ctx, "edge", "sensor", func(*herd.Module) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Module(ctx, "edge", "sensor"); !herd.IsCode(err, herd.ErrModuleNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if err := s.DeleteModule(ctx, "edge", "sensor", func(*herd.Module) error { return nil }); !herd.IsCode(err, herd.ErrModuleNotFound) {
		t.Errorf("delete twice: %v", err)
	}
}

// Deleting a device deletes its modules; a device of the same id made
// again has none.
func testModulesDeletedWithDevice(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "gone", "stays")
	for _, id := range []string{"gone", "stays"} {
		if _, err := s.CreateModule(ctx, newModule(id, "m1"), twin.NewDoc(t0)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpDelete, DeviceID: "gone", Change: func(*herd.Device) error { return nil }}})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	create(t, s, "gone")
	if list, err := s.Modules(ctx, "gone"); err != nil || len(list) != 0 {
		t.Errorf("modules of the re-created device: %v %v", list, err)
	}
	if _, err := s.Module(ctx, "stays", "m1"); err != nil {
		t.Errorf("another device's module: %v", err)
	}
}

// A device has at most registry.MaxModulesPerDevice modules.
func testModuleLimit(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "full")
	for i := range registry.MaxModulesPerDevice {
		if _, err := s.CreateModule(ctx, newModule("full", fmt.Sprintf("m%02d", i)), twin.NewDoc(t0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateModule(ctx, newModule("full", "one-more"), twin.NewDoc(t0)); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("module past the limit: %v", err)
	}
}

// FROM devices.modules reads module twins: conditions on module ids, tags
// and reported properties, projections, paging in (device, module) order,
// aggregates; FROM devices never returns a module.
func testModuleQueries(t *testing.T, s Store) {
	ctx := context.Background()
	create(t, s, "e1", "e2", "e3")
	for _, dm := range [][2]string{{"e1", "$edgeAgent"}, {"e1", "filter"}, {"e2", "$edgeAgent"}, {"e2", "cam"}, {"e3", "cam"}} {
		doc := twin.NewDoc(t0)
		if _, err := doc.Apply(twin.Patch{Tags: twin.Change{Set: true, Value: map[string]any{"role": dm[1]}}}, false, t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateModule(ctx, newModule(dm[0], dm[1]), doc); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.UpdateModuleTwin(ctx, "e2", "cam", func(_ *herd.Module, d *twin.Doc) error {
		_, err := d.Apply(twin.Patch{Reported: twin.Change{Set: true, Value: map[string]any{"fps": 30.0}}}, false, t0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ids := func(text string, size int) []string {
		t.Helper()
		svc := query.NewService(s)
		var out []string
		token := ""
		for {
			res, err := svc.Run(ctx, text, size, token)
			if err != nil {
				t.Fatalf("%s: %v", text, err)
			}
			for _, it := range res.Items {
				switch v := it.(type) {
				case *herd.Twin:
					out = append(out, v.DeviceID+"/"+v.ModuleID)
				case map[string]any:
					out = append(out, fmt.Sprint(v["deviceId"], "/", v["moduleId"], v["n"]))
				}
			}
			if res.Continuation == "" {
				return out
			}
			token = res.Continuation
		}
	}
	for _, c := range []struct {
		text string
		size int
		want []string
	}{
		{"SELECT * FROM devices.modules", 2, []string{"e1/$edgeAgent", "e1/filter", "e2/$edgeAgent", "e2/cam", "e3/cam"}},
		{"SELECT * FROM devices.modules WHERE moduleId = '$edgeAgent'", 1, []string{"e1/$edgeAgent", "e2/$edgeAgent"}},
		{"SELECT * FROM devices.modules WHERE tags.role = 'cam' AND deviceId != 'e3'", 10, []string{"e2/cam"}},
		{"SELECT * FROM devices.modules WHERE properties.reported.fps > 20", 10, []string{"e2/cam"}},
		{"SELECT * FROM devices.modules WHERE status = 'enabled' AND NOT capabilities.iotEdge AND deviceId = 'e1'", 10, []string{"e1/$edgeAgent", "e1/filter"}},
		{"SELECT deviceId, moduleId FROM devices.modules WHERE deviceId IN ['e2', 'e3']", 1, []string{"e2/$edgeAgent<nil>", "e2/cam<nil>", "e3/cam<nil>"}},
		{"SELECT * FROM devices WHERE deviceId = 'e1'", 10, []string{"e1/"}},
	} {
		// In (device, module) order, page after page.
		got := ids(c.text, c.size)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s (pages of %d) = %v, want %v", c.text, c.size, got, c.want)
		}
	}
	res, err := query.NewService(s).Run(ctx, "SELECT moduleId, COUNT() AS n FROM devices.modules GROUP BY moduleId", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]string{}
	for _, it := range res.Items {
		m := it.(map[string]any)
		counts[fmt.Sprint(m["moduleId"])] = fmt.Sprint(m["n"])
	}
	if want := map[string]string{"$edgeAgent": "2", "filter": "1", "cam": "2"}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("modules by id: %v, want %v", counts, want)
	}
	res, err = query.NewService(s).Run(ctx, "SELECT * FROM devices.modules WHERE moduleId = 'cam'", 10, "")
	if err != nil || res.ItemType != query.ItemTwin || len(res.Items) != 2 {
		t.Fatalf("module twins: %+v %v", res, err)
	}
	if tw := res.Items[0].(*herd.Twin); tw.Tags["role"] != "cam" || tw.Status != herd.DeviceEnabled || tw.ModuleID != "cam" {
		t.Errorf("a module twin from a query: %+v", tw)
	}
}
