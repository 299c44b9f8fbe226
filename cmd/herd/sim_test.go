package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
)

// startSim runs `herd sim` in the background; stop cancels it and returns
// its output and error.
func startSim(t *testing.T, lookupEnv func(string) (string, bool), args ...string) (out *syncBuffer, stop func() (string, error)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"sim"}, args...), lookupEnv, strings.NewReader(""), out, out) }()
	return out, func() (string, error) {
		cancel()
		select {
		case err := <-done:
			return out.String(), err
		case <-time.After(30 * time.Second):
			t.Fatal("herd sim did not stop")
			return "", nil
		}
	}
}

func TestSim(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	ctx := context.Background()
	const n = 40

	// Register and connect over plain MQTT.
	out, stop := startSim(t, env, "--devices", fmt.Sprint(n), "--create", "--tags", "building=43:50%,44:50%;ring=canary",
		"--transport", "mqtt-plain", "--address", h.MQTTPlainAddr, "--status-interval", "20ms")
	hubtest.Eventually(t, 20*time.Second, func() bool { return h.Bus.Connected() == n }, "devices connected: %s", out)
	for id, want := range map[string]string{"sim-000000": "43", "sim-000019": "43", "sim-000020": "44", "sim-000039": "44"} {
		tw, err := h.Service.GetTwin(ctx, id)
		if err != nil || fmt.Sprint(tw.Tags["building"]) != want || tw.Tags["ring"] != "canary" {
			t.Fatalf("%s: tags %v, want building %s: %v", id, tw.Tags, want, err)
		}
	}
	res, err := h.Service.InvokeMethod(ctx, "sim-000007", herd.MethodRequest{MethodName: "lockDoor", Payload: json.RawMessage(`{"lockTime":"10m"}`), ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 || string(res.Payload) != `{"lockTime":"10m"}` {
		t.Fatalf("lockDoor: %+v %v", res, err)
	}
	if _, err := h.Service.UpdateTwin(ctx, "sim-000003", herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"floor": 3}}}, "*"); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		tw, err := h.Service.GetTwin(ctx, "sim-000003")
		return err == nil && fmt.Sprint(tw.Properties.Reported["floor"]) == "3"
	}, "desired floor reported back")
	hubtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(out.String(), "methods 1 (") && strings.Contains(out.String(), "desired 1  reported 1")
	}, "status line counts the method and the desired update:\n%s", out)
	text, err := stop()
	if err != nil {
		t.Fatalf("sim: %v\n%s", err, text)
	}
	for _, want := range []string{"Registered 40 devices (0 existed)", "all 40 devices connected", "connected 40/40",
		"Stopped after", "1 methods answered (0 failed, 0 dropped), 1 desired updates applied, 1 reported"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "devices disconnected")

	// The same devices without --create (keys read from the registry), over
	// TLS and over WebSocket; --create again keeps existing devices.
	for _, args := range [][]string{
		{"--devices", "10", "--transport", "mqtt", "--address", h.MQTTAddr},
		{"--devices", "10", "--transport", "websocket", "--create"},
	} {
		out, stop := startSim(t, env, args...)
		hubtest.Eventually(t, 20*time.Second, func() bool { return h.Bus.Connected() == 10 }, "%v: devices connected: %s", args, out)
		text, err := stop()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, text)
		}
		if strings.Contains(text, "--create") && !strings.Contains(text, "Registered 0 devices (10 existed)") {
			t.Errorf("%v: %s", args, text)
		}
		hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "devices disconnected")
	}
}

func TestSimErrors(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--devices", "0"}, "--devices 0"},
		{[]string{"--tags", "building=43"}, "add --create"},
		{[]string{"--create", "--tags", "building=43:50%,44:40%"}, "add up to 90%"},
		{[]string{"--create", "--tags", "building=43,44"}, "has no share"},
		{[]string{"--transport", "carrier-pigeon"}, `--transport "carrier-pigeon"`},
		{[]string{"--transport", "mqtt-plain"}, "give --address"},
		{[]string{"--method-failure-rate", "2"}, "between 0 and 1"},
		{[]string{"--devices", "3", "--prefix", "nobody-", "--address", h.MQTTAddr}, "is not registered (register the fleet with --create)"},
	} {
		out, err := runCLI(t, env, append([]string{"sim"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q\n%s", tc.args, err, tc.want, out)
		}
	}
}
