package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/hubtest"
)

func TestMethodAndMonitorCLI(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	for _, id := range []string{"dev1", "offline"} {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := h.DeviceConnectionString(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	d, err := device.New(cs, device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
	if err != nil {
		t.Fatal(err)
	}
	d.OnMethod("setInterval", func(_ context.Context, p json.RawMessage) (int, any) {
		return 202, map[string]json.RawMessage{"got": p}
	})
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	out, err := runCLI(t, env, "method", "invoke", "dev1", "setInterval", "--payload", `{"seconds":5}`, "--timeout", "10")
	if err != nil || !strings.Contains(out, "status: 202") || !strings.Contains(out, `payload: {"got":{"seconds":5}}`) {
		t.Fatalf("method invoke: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "method", "invoke", "dev1", "setInterval", "-o", "json")
	if err != nil || !strings.Contains(out, `"status": 202`) {
		t.Errorf("method invoke -o json: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "method", "invoke", "offline", "m"); err == nil || !strings.Contains(err.Error(), "DeviceNotOnline") {
		t.Errorf("offline device: %v", err)
	}
	if _, err := runCLI(t, env, "method", "invoke", "dev1", "m", "--payload", "{nope"); err == nil || !strings.Contains(err.Error(), "--payload") {
		t.Errorf("bad payload: %v", err)
	}
	if _, err := runCLI(t, env, "method", "invoke", "dev1", "m", "--timeout", "1"); err == nil || !strings.Contains(err.Error(), "ArgumentInvalid") {
		t.Errorf("bad timeout: %v", err)
	}

	// herd monitor prints messages as they arrive, until interrupted.
	mctx, cancel := context.WithCancel(ctx)
	var mout syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(mctx, []string{"monitor", "--device", "dev1", "--properties"}, env, strings.NewReader(""), &mout, &mout)
	}()
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Events.Subscribers() == 1 }, "monitor not attached")
	if err := d.SendEvent(ctx, []byte(`{"temperature":21}`), map[string]string{"$.ct": "application/json", "alert": "no"}); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(mout.String(), `dev1 {"temperature":21}`) && strings.Contains(mout.String(), `"alert":"no"`)
	}, "monitor output:\n%s", &mout)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("monitor: %v", err)
	}
}
