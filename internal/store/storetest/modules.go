package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
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
