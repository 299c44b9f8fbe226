package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
)

func TestQueryCLI(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	ctx := context.Background()
	for i := range 5 {
		id := fmt.Sprintf("d%d", i)
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Service.UpdateTwin(ctx, id, herd.TwinPatch{Tags: map[string]any{"building": 40 + i%2}}, "*"); err != nil {
			t.Fatal(err)
		}
	}

	out, err := runCLI(t, env, "query", "SELECT tags.building AS b, deviceId FROM devices WHERE tags.building = 41", "--page-size", "1")
	want := "B   DEVICEID\n41  d1\n41  d3\n2 result(s)\n"
	if err != nil || out != want {
		t.Errorf("projection table: %v\n%q\nwant %q", err, out, want)
	}
	out, err = runCLI(t, env, "query", "SELECT tags.building, COUNT() FROM devices GROUP BY tags.building")
	if err != nil || !strings.Contains(out, "BUILDING  $1\n40        3\n41        2\n") {
		t.Errorf("aggregate table: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "query", "SELECT * FROM devices WHERE tags.building = 40")
	if err != nil || !strings.Contains(out, "DEVICEID  STATUS   CONNECTIONSTATE  LASTACTIVITYTIME      VERSION  TAGS") ||
		!strings.Contains(out, `d4        enabled  Disconnected     0001-01-01T00:00:00Z  2        {"building":40}`) {
		t.Errorf("twin table: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "query", "SELECT * FROM devices WHERE tags.building = 40", "-o", "json")
	var twins []herd.Twin
	if err != nil || json.Unmarshal([]byte(out), &twins) != nil || len(twins) != 3 || twins[2].DeviceID != "d4" {
		t.Errorf("json: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "query", "SELECT * FROM devices WHERE tags.building = ")
	if err == nil || !strings.Contains(err.Error(), "line 1, column 45") {
		t.Errorf("bad query: %v\n%s", err, out)
	}
}
