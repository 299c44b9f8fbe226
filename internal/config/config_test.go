package config_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

func createDevices(t *testing.T, h *hubtest.Hub, tags map[string]any, ids ...string) {
	t.Helper()
	ds := make([]herd.ImportDevice, len(ids))
	for i, id := range ids {
		ds[i] = herd.ImportDevice{ID: id, ImportMode: herd.ImportCreate, Tags: tags}
	}
	res, err := h.Service.BulkDevices(context.Background(), ds)
	if err != nil || !res.IsSuccessful {
		t.Fatalf("create devices: %v %+v", err, res)
	}
}

// desired returns a device's desired property name, as JSON ("" if unset).
func desired(t *testing.T, h *hubtest.Hub, id, name string) string {
	t.Helper()
	tw, err := h.Service.GetTwin(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := tw.Properties.Desired[name]
	if !ok {
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func waitDesired(t *testing.T, h *hubtest.Hub, id, name, want string) {
	t.Helper()
	hubtest.Eventually(t, 20*time.Second, func() bool { return desired(t, h, id, name) == want },
		"%s's desired %s is %s, want %s", id, name, desired(t, h, id, name), want)
}

func chiller(id, cond string, priority int, temp int) herd.Configuration {
	return herd.Configuration{ID: id, TargetCondition: cond, Priority: priority, Labels: map[string]string{"team": "ops"},
		Content: herd.ConfigurationContent{DeviceContent: map[string]json.RawMessage{
			"properties.desired.chiller": json.RawMessage(fmt.Sprintf(`{"temperature":%d,"pressure":28}`, temp))}},
		Metrics: herd.ConfigurationMetrics{Queries: map[string]string{"hot": "SELECT deviceId FROM devices WHERE tags.zone = 'hot'"}}}
}

// TestConfigurationAppliesOnChange: a configuration applies its desired
// properties to the devices it selects when created, to a device created
// or retagged later, and the higher priority wins; the metrics count the
// devices.
func TestConfigurationAppliesOnChange(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	createDevices(t, h, map[string]any{"env": "prod", "zone": "hot"}, "p1", "p2")
	createDevices(t, h, map[string]any{"env": "dev"}, "d1")
	c, err := h.Service.CreateConfiguration(ctx, chiller("chiller-prod", "tags.env = 'prod'", 10, 66))
	if err != nil {
		t.Fatal(err)
	}
	if c.ETag == "" || c.SchemaVersion != "1.0" || c.CreatedTimeUTC.IsZero() || c.Labels["team"] != "ops" {
		t.Errorf("created %+v", c)
	}
	want := `{"pressure":28,"temperature":66}`
	waitDesired(t, h, "p1", "chiller", want)
	waitDesired(t, h, "p2", "chiller", want)
	if got := desired(t, h, "d1", "chiller"); got != "" {
		t.Errorf("d1 (not selected) got %s", got)
	}
	// A device created later, and one retagged, are picked up.
	createDevices(t, h, map[string]any{"env": "prod"}, "p3")
	waitDesired(t, h, "p3", "chiller", want)
	if _, err := h.Service.UpdateTwin(ctx, "d1", herd.TwinPatch{Tags: map[string]any{"env": "prod"}}, "*"); err != nil {
		t.Fatal(err)
	}
	waitDesired(t, h, "d1", "chiller", want)
	// And one retagged by a twin job.
	createDevices(t, h, map[string]any{"env": "dev"}, "j1")
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "retag", "deviceId = 'j1'", herd.TwinPatch{Tags: map[string]any{"env": "prod"}}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDesired(t, h, "j1", "chiller", want)
	// A configuration of higher priority wins on the devices it selects.
	if _, err := h.Service.CreateConfiguration(ctx, chiller("chiller-hot", "tags.zone = 'hot'", 20, 60)); err != nil {
		t.Fatal(err)
	}
	waitDesired(t, h, "p1", "chiller", `{"pressure":28,"temperature":60}`)
	waitDesired(t, h, "p2", "chiller", `{"pressure":28,"temperature":60}`)
	got, err := h.Service.GetConfiguration(ctx, "chiller-prod")
	if err != nil {
		t.Fatal(err)
	}
	if r := got.SystemMetrics.Results; r["targetedCount"] != 5 || r["appliedCount"] != 3 || got.Metrics.Results["hot"] != 2 {
		t.Errorf("metrics of chiller-prod: %+v %+v", got.SystemMetrics, got.Metrics)
	}
	hot, _ := h.Service.GetConfiguration(ctx, "chiller-hot")
	if r := hot.SystemMetrics.Results; r["targetedCount"] != 2 || r["appliedCount"] != 2 {
		t.Errorf("metrics of chiller-hot: %+v", hot.SystemMetrics)
	}
	// Lowering the priority hands the devices back.
	upd := chiller("chiller-hot", "tags.zone = 'hot'", 5, 60)
	if _, err := h.Service.UpdateConfiguration(ctx, upd, hot.ETag); err != nil {
		t.Fatal(err)
	}
	waitDesired(t, h, "p1", "chiller", want)
	if _, err := h.Service.UpdateConfiguration(ctx, upd, hot.ETag); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("stale etag: %v", err)
	}
	list, err := h.Service.ListConfigurations(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "chiller-hot" {
		t.Errorf("list: %+v %v", list, err)
	}
	// Deleting leaves the devices' desired properties as they are.
	if err := h.Service.DeleteConfiguration(ctx, "chiller-prod", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.GetConfiguration(ctx, "chiller-prod"); !herd.IsCode(err, herd.ErrConfigurationNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if got := desired(t, h, "p3", "chiller"); got != want {
		t.Errorf("p3 after delete: %s", got)
	}
}

// TestConfigurationAppliesAfterRestart: a configuration stored before a
// restart is applied to devices created after it.
func TestConfigurationAppliesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	h := hubtest.Start(t, hubtest.WithDir(dir))
	if _, err := h.Service.CreateConfiguration(context.Background(), chiller("c1", "deviceId = 'late'", 0, 1)); err != nil {
		t.Fatal(err)
	}
	h.Stop()
	h = hubtest.Start(t, hubtest.WithDir(dir))
	createDevices(t, h, nil, "late")
	waitDesired(t, h, "late", "chiller", `{"pressure":28,"temperature":1}`)
}

// TestConfigurationValidation: bad configurations are refused with the
// error a caller can act on, and nothing is stored.
func TestConfigurationValidation(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	good := chiller("ok", "tags.env = 'prod'", 1, 5)
	if _, err := h.Service.CreateConfiguration(ctx, good); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.CreateConfiguration(ctx, good); !herd.IsCode(err, herd.ErrConfigurationAlreadyExists) {
		t.Errorf("twice: %v", err)
	}
	changed := good
	changed.Content = herd.ConfigurationContent{DeviceContent: map[string]json.RawMessage{"properties.desired.other": json.RawMessage(`1`)}}
	if _, err := h.Service.UpdateConfiguration(ctx, changed, "*"); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("content changed: %v", err)
	}
	if _, err := h.Service.UpdateConfiguration(ctx, chiller("missing", "", 0, 1), "*"); !herd.IsCode(err, herd.ErrConfigurationNotFound) {
		t.Errorf("update of a missing one: %v", err)
	}
	for name, c := range map[string]herd.Configuration{
		"upper-case id":       chiller("Bad", "", 0, 1),
		"reported condition":  chiller("r", "properties.reported.fw = '1'", 0, 1),
		"bad condition":       chiller("b", "tags.env = ", 0, 1),
		"negative priority":   chiller("n", "", -1, 1),
		"key without desired": {ID: "k", Content: herd.ConfigurationContent{DeviceContent: map[string]json.RawMessage{"tags.x": json.RawMessage(`1`)}}},
		"null value":          {ID: "v", Content: herd.ConfigurationContent{DeviceContent: map[string]json.RawMessage{"properties.desired.x": json.RawMessage(`null`)}}},
		"no content":          {ID: "e"},
		"module content":      {ID: "m", Content: herd.ConfigurationContent{ModulesContent: map[string]json.RawMessage{"$edgeAgent": json.RawMessage(`{}`)}}},
		"bad metric":          {ID: "q", Content: good.Content, Metrics: herd.ConfigurationMetrics{Queries: map[string]string{"x": "SELECT * FROM devices.jobs"}}},
	} {
		_, err := h.Service.CreateConfiguration(ctx, c)
		if code := herd.ErrorCodeOf(err); code != herd.ErrArgumentInvalid && code != herd.ErrArgumentNull {
			t.Errorf("%s: %v", name, err)
		}
	}
	if list, _ := h.Service.ListConfigurations(ctx); len(list) != 1 {
		t.Errorf("%d configurations stored, want 1", len(list))
	}
	if err := h.Service.DeleteConfiguration(ctx, "ok", "bm90IHRoZSBldGFn"); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("delete with a wrong etag: %v", err)
	}
}
