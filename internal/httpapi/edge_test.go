package httpapi_test

import (
	"context"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
)

// TestEdgeScopes follows Azure's registry end-to-end tests for IoT Edge
// hierarchies: an edge device gets ms-azure-iot-edge://{id}-{generationId};
// a nested edge device names its parent in parentScopes; a leaf device
// takes its parent's scope as deviceScope and the hub copies it into
// parentScopes; a scope that is no edge device's is refused.
func TestEdgeScopes(t *testing.T) {
	h := hubtest.Start(t)
	c := h.Service
	ctx := context.Background()
	edge1, err := c.CreateDevice(ctx, herd.Device{DeviceID: "edge-1", Capabilities: herd.Capabilities{IoTEdge: true}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "ms-azure-iot-edge://edge-1-" + edge1.GenerationID; edge1.DeviceScope != want {
		t.Errorf("edge device scope %q, want %q", edge1.DeviceScope, want)
	}
	edge2, err := c.CreateDevice(ctx, herd.Device{DeviceID: "edge-2", Capabilities: herd.Capabilities{IoTEdge: true},
		DeviceScope: "ignored", ParentScopes: []string{edge1.DeviceScope}})
	if err != nil {
		t.Fatal(err)
	}
	if edge2.DeviceScope != "ms-azure-iot-edge://edge-2-"+edge2.GenerationID || len(edge2.ParentScopes) != 1 || edge2.ParentScopes[0] != edge1.DeviceScope {
		t.Errorf("nested edge device: scope %q parents %q", edge2.DeviceScope, edge2.ParentScopes)
	}
	leaf, err := c.CreateDevice(ctx, herd.Device{DeviceID: "leaf", DeviceScope: edge2.DeviceScope})
	if err != nil {
		t.Fatal(err)
	}
	if leaf.DeviceScope != edge2.DeviceScope || len(leaf.ParentScopes) != 1 || leaf.ParentScopes[0] != edge2.DeviceScope {
		t.Errorf("leaf: scope %q parents %q, want the edge's scope in both", leaf.DeviceScope, leaf.ParentScopes)
	}
	// An update that echoes another scope keeps the edge device's own.
	edge1.DeviceScope = "ms-azure-iot-edge://other-1"
	if up, err := c.UpdateDevice(ctx, *edge1, "*"); err != nil || up.DeviceScope != edge2.ParentScopes[0] {
		t.Errorf("edge update: %v, scope %q", err, up.DeviceScope)
	}
	// A leaf moves to another parent, and leaves it.
	if up, err := c.UpdateDevice(ctx, herd.Device{DeviceID: "leaf", DeviceScope: edge2.ParentScopes[0]}, "*"); err != nil || up.DeviceScope != edge2.ParentScopes[0] {
		t.Errorf("leaf reparented: %v %+v", err, up)
	}
	if up, err := c.UpdateDevice(ctx, herd.Device{DeviceID: "leaf"}, "*"); err != nil || up.DeviceScope != "" || len(up.ParentScopes) != 0 {
		t.Errorf("leaf without a parent: %v %+v", err, up)
	}

	for _, tc := range []struct {
		name string
		d    herd.Device
	}{
		{"not an edge scope", herd.Device{DeviceID: "bad-1", DeviceScope: "someScope"}},
		{"no such edge device", herd.Device{DeviceID: "bad-2", DeviceScope: "ms-azure-iot-edge://ghost-637131779299315265"}},
		{"a leaf's scope", herd.Device{DeviceID: "bad-3", DeviceScope: "ms-azure-iot-edge://leaf-637131779299315265"}},
		{"wrong generation", herd.Device{DeviceID: "bad-4", DeviceScope: "ms-azure-iot-edge://edge-1-1"}},
		{"parent scope not an edge", herd.Device{DeviceID: "bad-5", Capabilities: herd.Capabilities{IoTEdge: true}, ParentScopes: []string{"x"}}},
		{"two parents", herd.Device{DeviceID: "bad-6", ParentScopes: []string{edge2.ParentScopes[0], edge2.DeviceScope}}},
		{"scope and parent differ", herd.Device{DeviceID: "bad-7", DeviceScope: edge2.DeviceScope, ParentScopes: []string{edge2.ParentScopes[0]}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.CreateDevice(ctx, tc.d); !herd.IsCode(err, herd.ErrArgumentInvalid) {
				t.Errorf("create: %v, want ArgumentInvalid", err)
			}
		})
	}
	if _, err := c.UpdateDevice(ctx, herd.Device{DeviceID: "edge-2", Capabilities: herd.Capabilities{IoTEdge: true},
		ParentScopes: []string{edge2.DeviceScope}}, "*"); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("an edge device as its own parent: %v, want ArgumentInvalid", err)
	}
	res, err := c.BulkDevices(ctx, []herd.ImportDevice{
		{ID: "bulk-ok", ImportMode: "create", DeviceScope: edge2.ParentScopes[0]},
		{ID: "bulk-bad", ImportMode: "create", DeviceScope: "someScope"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].DeviceID != "bulk-bad" || res.Errors[0].ErrorCode != "ArgumentInvalid" {
		t.Errorf("bulk: %+v", res)
	}
	if d, err := c.GetDevice(ctx, "bulk-ok"); err != nil || len(d.ParentScopes) != 1 {
		t.Errorf("bulk-created leaf: %v %+v", err, d)
	}
	st, _ := c.RegistryStatistics(ctx)
	if st.TotalDeviceCount != 4 {
		t.Errorf("%d devices, want 4: refused devices must not be written", st.TotalDeviceCount)
	}
}
