package main

import (
	"context"
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
