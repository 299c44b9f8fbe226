package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
)

// Module identities through the REST API and the Go SDK: create with
// generated keys, read, list, update with etags, delete; bad ids, unknown
// devices and modules, and the rights each route needs.
func TestModules(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	c := h.Service
	ctx := context.Background()
	if _, err := c.CreateDevice(ctx, herd.Device{DeviceID: "edge-1"}); err != nil {
		t.Fatal(err)
	}
	m, err := c.CreateModule(ctx, herd.Module{DeviceID: "edge-1", ModuleID: "$edgeHub", ManagedBy: "IotEdge"})
	if err != nil {
		t.Fatal(err)
	}
	if m.ModuleID != "$edgeHub" || m.DeviceID != "edge-1" || m.ManagedBy != "IotEdge" || m.GenerationID == "" || m.ETag == "" ||
		m.Authentication.Type != herd.AuthSAS || m.Authentication.SymmetricKey.PrimaryKey == "" || m.ConnectionState != herd.Disconnected {
		t.Errorf("created %+v", m)
	}
	if _, err := c.CreateModule(ctx, herd.Module{DeviceID: "edge-1", ModuleID: "$edgeHub"}); !herd.IsCode(err, herd.ErrModuleAlreadyExists) {
		t.Errorf("create twice: %v", err)
	}
	if _, err := c.CreateModule(ctx, herd.Module{DeviceID: "edge-1", ModuleID: "temp/sensor"}); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("a bad module id: %v", err)
	}
	if _, err := c.CreateModule(ctx, herd.Module{DeviceID: "nobody", ModuleID: "m"}); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("a module of an unknown device: %v", err)
	}
	if _, err := c.CreateModule(ctx, herd.Module{DeviceID: "edge-1", ModuleID: "k",
		Authentication: herd.Authentication{SymmetricKey: herd.SymmetricKey{PrimaryKey: "not base64"}}}); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("a bad key: %v", err)
	}
	got, err := c.GetModule(ctx, "edge-1", "$edgeHub")
	if err != nil || got.ETag != m.ETag || got.Authentication.SymmetricKey != m.Authentication.SymmetricKey {
		t.Errorf("get: %+v %v", got, err)
	}
	if _, err := c.GetModule(ctx, "edge-1", "nope"); !herd.IsCode(err, herd.ErrModuleNotFound) {
		t.Errorf("get unknown: %v", err)
	}
	if _, err := c.GetModule(ctx, "nobody", "nope"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("get on an unknown device: %v", err)
	}
	// The reply carries the ETag header, as device replies do.
	resp, body := r.do(http.MethodGet, "/devices/edge-1/modules/%24edgeHub"+v, "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"`+m.ETag+`"` {
		t.Errorf("GET: %d ETag %q %s", resp.StatusCode, resp.Header.Get("ETag"), body)
	}
	if _, err := c.CreateModule(ctx, herd.Module{DeviceID: "edge-1", ModuleID: "filter"}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListModules(ctx, "edge-1")
	if err != nil || len(list) != 2 || list[0].ModuleID != "$edgeHub" || list[1].ModuleID != "filter" {
		t.Errorf("list: %+v %v", list, err)
	}
	resp, body = r.do(http.MethodGet, "/devices/edge-1/modules"+v, "", nil)
	var arr []json.RawMessage
	if resp.StatusCode != 200 || json.Unmarshal(body, &arr) != nil || len(arr) != 2 {
		t.Errorf("GET list: %d %s", resp.StatusCode, body)
	}
	// Update: stale etag refused; keys kept when left empty; managedBy set.
	if _, err := c.UpdateModule(ctx, herd.Module{DeviceID: "edge-1", ModuleID: "filter", ManagedBy: "x"}, "c3RhbGU="); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("update with a stale etag: %v", err)
	}
	before, _ := c.GetModule(ctx, "edge-1", "filter")
	up, err := c.UpdateModule(ctx, herd.Module{DeviceID: "edge-1", ModuleID: "filter", ManagedBy: "me"}, before.ETag)
	if err != nil || up.ManagedBy != "me" || up.ETag == before.ETag || up.Authentication.SymmetricKey != before.Authentication.SymmetricKey {
		t.Errorf("update: %+v %v", up, err)
	}
	if _, err := c.UpdateModule(ctx, herd.Module{DeviceID: "edge-1", ModuleID: "ghost"}, "*"); !herd.IsCode(err, herd.ErrModuleNotFound) {
		t.Errorf("update unknown: %v", err)
	}
	// A body naming another module is refused.
	resp, body = r.do(http.MethodPut, "/devices/edge-1/modules/filter"+v, `{"moduleId":"other"}`, map[string]string{"If-Match": "*"})
	expectError(t, resp, body, 400, herd.ErrArgumentInvalid)
	resp, body = r.do(http.MethodPut, "/devices/edge-1/modules/m2"+v, `{"moduleId":`, nil)
	expectError(t, resp, body, 400, herd.ErrIotHubFormatError)
	// Rights: reading needs registryRead, writing registryWrite.
	req, _ := http.NewRequest(http.MethodDelete, h.URL+"/devices/edge-1/modules/filter"+v, nil)
	req.Header.Set("Authorization", r.token("registryRead"))
	if resp, err := r.http.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("delete with registryRead: %v %v", resp.StatusCode, err)
	}
	req, _ = http.NewRequest(http.MethodGet, h.URL+"/devices/edge-1/modules"+v, nil)
	req.Header.Set("Authorization", r.token("registryRead"))
	if resp, err := r.http.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("list with registryRead: %v %v", resp.StatusCode, err)
	}
	// Delete: by etag, then gone; deleting the device deletes the rest.
	if err := c.DeleteModule(ctx, "edge-1", "filter", "c3RhbGU="); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("delete with a stale etag: %v", err)
	}
	if err := c.DeleteModule(ctx, "edge-1", "filter", up.ETag); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteModule(ctx, "edge-1", "filter", ""); !herd.IsCode(err, herd.ErrModuleNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	if err := c.DeleteDevice(ctx, "edge-1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateDevice(ctx, herd.Device{DeviceID: "edge-1"}); err != nil {
		t.Fatal(err)
	}
	if list, err := c.ListModules(ctx, "edge-1"); err != nil || len(list) != 0 {
		t.Errorf("modules after the device was deleted and made again: %+v %v", list, err)
	}
}

// Module twins: read, patch and replace with etags, apart from the
// device's twin; reported properties are the module's own to write.
func TestModuleTwins(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	c := h.Service
	ctx := context.Background()
	if _, err := c.CreateDevice(ctx, herd.Device{DeviceID: "gw"}); err != nil {
		t.Fatal(err)
	}
	m, err := c.CreateModule(ctx, herd.Module{DeviceID: "gw", ModuleID: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	tw, err := c.GetModuleTwin(ctx, "gw", "cam")
	if err != nil || tw.DeviceID != "gw" || tw.ModuleID != "cam" || tw.DeviceETag != m.ETag || tw.Version != 1 ||
		len(tw.Tags) != 0 || fmt.Sprint(tw.Properties.Desired["$version"]) != "1" {
		t.Fatalf("new module twin: %+v %v", tw, err)
	}
	up, err := c.UpdateModuleTwin(ctx, "gw", "cam", herd.TwinPatch{Tags: map[string]any{"lens": "wide"},
		Properties: &herd.PatchProperties{Desired: map[string]any{"fps": 30.0}}}, tw.ETag)
	if err != nil || up.Tags["lens"] != "wide" || fmt.Sprint(up.Properties.Desired["fps"]) != "30" || fmt.Sprint(up.Properties.Desired["$version"]) != "2" || up.ETag == tw.ETag {
		t.Fatalf("patch: %+v %v", up, err)
	}
	if _, err := c.UpdateModuleTwin(ctx, "gw", "cam", herd.TwinPatch{Tags: map[string]any{"x": 1}}, tw.ETag); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("patch with a stale etag: %v", err)
	}
	rep, err := c.ReplaceModuleTwin(ctx, "gw", "cam", herd.TwinPatch{Tags: map[string]any{"only": true}}, "*")
	if err != nil || len(rep.Tags) != 1 || rep.Tags["only"] != true || rep.Properties.Desired["fps"] != nil {
		t.Errorf("replace: %+v %v", rep, err)
	}
	// The device's twin is its own.
	if dt, err := c.GetTwin(ctx, "gw"); err != nil || len(dt.Tags) != 0 || dt.ModuleID != "" {
		t.Errorf("the device twin: %+v %v", dt, err)
	}
	resp, body := r.do(http.MethodPatch, "/twins/gw/modules/cam"+v, `{"properties":{"reported":{"x":1}}}`, nil)
	expectError(t, resp, body, 400, herd.ErrArgumentInvalid)
	resp, body = r.do(http.MethodPatch, "/twins/gw/modules/cam"+v, ``, nil)
	expectError(t, resp, body, 400, herd.ErrArgumentNull)
	resp, body = r.do(http.MethodGet, "/twins/gw/modules/nope"+v, ``, nil)
	expectError(t, resp, body, 404, herd.ErrModuleNotFound)
	resp, body = r.do(http.MethodGet, "/twins/nobody/modules/cam"+v, ``, nil)
	expectError(t, resp, body, 404, herd.ErrDeviceNotFound)
	resp, _ = r.do(http.MethodGet, "/twins/gw/modules/cam"+v, ``, nil)
	if resp.Header.Get("ETag") != `"`+rep.ETag+`"` {
		t.Errorf("ETag header %q, want %q", resp.Header.Get("ETag"), rep.ETag)
	}
}
