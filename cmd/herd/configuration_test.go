package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
)

// TestConfigurationCLI: create, show, list, update and delete a
// configuration; it reaches the device it selects.
func TestConfigurationCLI(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	ctx := context.Background()
	if _, err := h.Service.BulkDevices(ctx, []herd.ImportDevice{{ID: "b43", ImportMode: herd.ImportCreate, Tags: map[string]any{"building": 43}}}); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, env, "configuration", "create", "chiller", "--desired", `{"chiller":{"temperature":66}}`,
		"--target", "tags.building = 43", "--priority", "10", "--label", "team=ops",
		"--metric", "all=SELECT deviceId FROM devices")
	if err != nil || !strings.Contains(out, "Configuration:  chiller") || !strings.Contains(out, `properties.desired.chiller = {"temperature":66}`) {
		t.Fatalf("create: %v\n%s", err, out)
	}
	hubtest.Eventually(t, 20*time.Second, func() bool {
		tw, err := h.Service.GetTwin(ctx, "b43")
		return err == nil && tw.Properties.Desired["chiller"] != nil
	}, "the configuration did not reach b43")
	out, err = runCLI(t, env, "configuration", "show", "chiller")
	if err != nil || !strings.Contains(out, "Targeted:       1 devices") || !strings.Contains(out, "Label:          team = ops") ||
		!strings.Contains(out, "Metric:         all = 1") {
		t.Errorf("show: %v\n%s", err, out)
	}
	if out, err = runCLI(t, env, "configuration", "update", "chiller", "--priority", "30"); err != nil || !strings.Contains(out, "Priority:       30") ||
		!strings.Contains(out, "Target:         tags.building = 43") {
		t.Errorf("update: %v\n%s", err, out)
	}
	if out, err = runCLI(t, env, "configuration", "list"); err != nil || !strings.Contains(out, "chiller") || !strings.Contains(out, "30") {
		t.Errorf("list: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "configuration", "create", "x", "--desired", "nope"); err == nil || !strings.Contains(err.Error(), "--desired") {
		t.Errorf("bad --desired: %v", err)
	}
	if _, err := runCLI(t, env, "configuration", "create", "chiller", "--desired", `{"a":1}`); err == nil || !strings.Contains(err.Error(), "ConfigurationAlreadyExists") {
		t.Errorf("create twice: %v", err)
	}
	if out, err = runCLI(t, env, "configuration", "delete", "chiller"); err != nil || !strings.Contains(out, "deleted") {
		t.Errorf("delete: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "configuration", "show", "chiller"); err == nil || !strings.Contains(err.Error(), "ConfigurationNotFound") {
		t.Errorf("show after delete: %v", err)
	}
}
