package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/sas"
)

// TestDeviceConnectionStringGateway: for a hub whose MQTT is not on 8883,
// connection-string --device adds GatewayHostName=host:port, and a device
// connects with that string alone; with MQTT off it adds nothing.
func TestDeviceConnectionStringGateway(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, stop := startServe(t, noEnv, "--data", dir, "--https-addr", "127.0.0.1:0")
	m := regexp.MustCompile(`devices: GatewayHostName=(localhost:\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no GatewayHostName in the banner:\n%s", out)
	}
	if o, err := runCLI(t, noEnv, "device", "create", "gw-1", "--data", dir); err != nil {
		t.Fatalf("device create: %v\n%s", err, o)
	}
	text, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--device", "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := sas.ParseConnectionString(strings.TrimSpace(text))
	if err != nil || cs.GatewayHostName != m[1] || cs.HostName != "localhost" || cs.DeviceID != "gw-1" {
		t.Fatalf("connection string %q (%v); want GatewayHostName=%s", text, err, m[1])
	}
	d, err := device.New(strings.TrimSpace(text), device.WithCAFile(filepath.Join(dir, "ca.pem")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatalf("connect with %q: %v", text, err)
	}
	d.Close()
	// --hostname names the gateway's host too.
	if text, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--device", "gw-1", "--hostname", "hub.example"); err != nil ||
		!strings.Contains(text, "HostName=hub.example;GatewayHostName=hub.example:") {
		t.Errorf("--hostname: %v %q", err, text)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// MQTT off: devices connect over WebSocket on the HTTPS port; no gateway.
	_, stop = startServe(t, noEnv, "--data", dir, "--https-addr", "127.0.0.1:0", "--mqtt-addr", "")
	text, err = runCLI(t, noEnv, "connection-string", "--data", dir, "--device", "gw-1")
	if err != nil || strings.Contains(text, "GatewayHostName") {
		t.Errorf("MQTT off: %v %q", err, text)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestModuleConnectionString: connection-string --device --module prints
// a module's connection string, with which the Go device SDK connects as
// the module, reports to the module's twin and answers its methods.
func TestModuleConnectionString(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, stop := startServe(t, noEnv, "--data", dir, "--https-addr", "127.0.0.1:0")
	defer stop()
	for _, args := range [][]string{{"device", "create", "gw-1"}, {"module", "create", "gw-1", "cam"}} {
		if o, err := runCLI(t, noEnv, append(args, "--data", dir)...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, o)
		}
	}
	text, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--device", "gw-1", "--module", "cam")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := sas.ParseConnectionString(strings.TrimSpace(text))
	if err != nil || cs.DeviceID != "gw-1" || cs.ModuleID != "cam" || cs.SharedAccessKey == "" {
		t.Fatalf("module connection string %q: %v", text, err)
	}
	d, err := device.New(strings.TrimSpace(text), device.WithCAFile(filepath.Join(dir, "ca.pem")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatalf("connect as the module: %v", err)
	}
	defer d.Close()
	if _, err := d.ReportProperties(ctx, map[string]any{"lens": "wide"}); err != nil {
		t.Fatal(err)
	}
	if err := d.SendEvent(ctx, []byte("frame"), nil); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, noEnv, "module", "show", "gw-1", "cam", "--data", dir)
	if err != nil || !strings.Contains(out, `"moduleId": "cam"`) {
		t.Errorf("module show: %v\n%s", err, out)
	}
	// The module's twin and methods from the CLI.
	out, err = runCLI(t, noEnv, "twin", "show", "gw-1", "--module", "cam", "--data", dir)
	if err != nil || !strings.Contains(out, `"lens": "wide"`) || !strings.Contains(out, `"moduleId": "cam"`) {
		t.Errorf("twin show --module: %v\n%s", err, out)
	}
	if out, err := runCLI(t, noEnv, "twin", "show", "gw-1", "--data", dir); err != nil || strings.Contains(out, `"lens"`) {
		t.Errorf("the device twin shows the module's report: %v\n%s", err, out)
	}
	if out, err := runCLI(t, noEnv, "twin", "update", "gw-1", "--module", "cam", "--tags", `{"zone":"b"}`, "--data", dir); err != nil || !strings.Contains(out, `"zone": "b"`) {
		t.Errorf("twin update --module: %v\n%s", err, out)
	}
	d.OnMethod("snap", func(_ context.Context, p json.RawMessage) (int, any) { return 201, map[string]any{"got": p} })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = runCLI(t, noEnv, "method", "invoke", "gw-1", "snap", "--module", "cam", "--payload", `{"n":1}`, "--connect-timeout", "5", "--data", dir)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !strings.Contains(out, "status: 201") || !strings.Contains(out, `{"got":{"n":1}}`) {
		t.Errorf("method invoke --module: %v\n%s", err, out)
	}
	if _, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--device", "gw-1", "--module", "nope"); err == nil || !strings.Contains(err.Error(), "ModuleNotFound") {
		t.Errorf("an unknown module: %v", err)
	}
	if _, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--module", "cam"); err == nil {
		t.Error("--module without --device was accepted")
	}
}
