package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/sas"
)

// syncBuffer is a bytes.Buffer safe for the command's goroutine and the
// test's polling.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func noEnv(string) (string, bool) { return "", false }

// envOf is a lookupEnv with the variables of m set (to "" too).
func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// herd runs the CLI in-process and returns its output.
func runCLI(t *testing.T, lookupEnv func(string) (string, bool), args ...string) (string, error) {
	t.Helper()
	var out, errOut syncBuffer
	err := run(context.Background(), args, lookupEnv, strings.NewReader(""), &out, &errOut)
	return out.String() + errOut.String(), err
}

func startServe(t *testing.T, lookupEnv func(string) (string, bool), args ...string) (out *syncBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--mqtt-addr", "127.0.0.1:0"}, args...), lookupEnv, strings.NewReader(""), out, io.Discard)
	}()
	hubtest.Eventually(t, 20*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v\n%s", err, out.String())
		default:
		}
		return strings.Contains(out.String(), "Herd is ready")
	}, "serve to print that it is ready")
	return out, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not stop")
			return nil
		}
	}
}

func TestServeConnectionStringAndCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	// The address comes from the environment, the rest from flags.
	out, stop := startServe(t, envOf(map[string]string{"HERD_HTTPS_ADDR": "127.0.0.1:0", "HERD_MQTT_ADDR": "127.0.0.1:0", "HERD_MQTT_PLAIN_ADDR": "127.0.0.1:0"}), "--data", dir, "--log-format", "json")
	text := out.String()
	if !strings.Contains(text, "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=") || !strings.Contains(text, filepath.Join(dir, "ca.pem")) {
		t.Errorf("ready message lacks the connection string or the CA path:\n%s", text)
	}
	if !strings.Contains(text, "MQTT (TLS)   127.0.0.1:") || !strings.Contains(text, "MQTT (plain) 127.0.0.1:") || !strings.Contains(text, "/$iothub/websocket") {
		t.Errorf("ready message lacks the MQTT listeners:\n%s", text)
	}
	for _, f := range []string{"herd.db", "ca.pem", "server.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("data folder: %v", err)
		}
	}

	cs, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--policy", "service")
	if err != nil || !strings.HasPrefix(cs, "HostName=localhost;SharedAccessKeyName=service;SharedAccessKey=") {
		t.Errorf("connection-string --policy service: %v %q", err, cs)
	}
	if _, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--policy", "nope"); err == nil {
		t.Error("unknown policy accepted")
	}

	// The CLI finds the local hub (connection string, CA, address) in --data.
	if out, err := runCLI(t, noEnv, "device", "create", "cli-1", "--data", dir); err != nil || !strings.Contains(out, `"deviceId": "cli-1"`) {
		t.Fatalf("device create: %v\n%s", err, out)
	}
	if out, err := runCLI(t, envOf(map[string]string{"HERD_DATA": dir}), "device", "list"); err != nil || !strings.Contains(out, "cli-1") || !strings.Contains(out, "Disconnected") {
		t.Errorf("device list: %v\n%s", err, out)
	}
	if out, err := runCLI(t, noEnv, "twin", "update", "cli-1", "--data", dir, "--tags", `{"building":43}`, "--desired", `{"floor":3}`); err != nil || !strings.Contains(out, `"building": 43`) {
		t.Errorf("twin update: %v\n%s", err, out)
	}
	if out, err := runCLI(t, noEnv, "twin", "show", "cli-1", "--data", dir); err != nil || !strings.Contains(out, `"floor": 3`) || !strings.Contains(out, `"$version": 2`) {
		t.Errorf("twin show: %v\n%s", err, out)
	}
	if _, err := runCLI(t, noEnv, "twin", "update", "cli-1", "--data", dir, "--tags", `[1]`); err == nil {
		t.Error("twin update with a non-object accepted")
	}
	dcs, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--device", "cli-1")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := sas.ParseConnectionString(dcs)
	if err != nil || parsed.DeviceID != "cli-1" || parsed.SharedAccessKey == "" {
		t.Errorf("device connection string %q: %v", dcs, err)
	}
	if out, err := runCLI(t, noEnv, "device", "show", "nope", "--data", dir); err == nil || !strings.Contains(err.Error(), "DeviceNotFound") {
		t.Errorf("device show nope: %v %s", err, out)
	}
	// A token for curl.
	tok, err := runCLI(t, noEnv, "token", "--data", dir, "--ttl", "10m")
	if err != nil {
		t.Fatal(err)
	}
	parsedTok, err := sas.Parse(strings.TrimSpace(tok))
	if err != nil || parsedTok.KeyName != "iothubowner" || parsedTok.Resource != "localhost" {
		t.Errorf("token %q: %v", tok, err)
	}
	if out, err := runCLI(t, noEnv, "device", "delete", "cli-1", "--data", dir); err != nil || !strings.Contains(out, "deleted cli-1") {
		t.Errorf("device delete: %v %s", err, out)
	}
	if err := stop(); err != nil {
		t.Errorf("serve returned %v after cancel", err)
	}
}

func TestCLIWithConnectionString(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	if out, err := runCLI(t, env, "device", "create", "env-1"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := runCLI(t, env, "device", "list", "-o", "json"); err != nil || !strings.Contains(out, `"deviceId": "env-1"`) {
		t.Errorf("%v %s", err, out)
	}
	bad := envOf(map[string]string{"HERD_CONNECTION_STRING": "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=" + "c2VjcmV0a2V5LTAxMjM0NTY3ODlhYmNkZWY=", "HERD_CA": ca, "HERD_URL": h.URL})
	if _, err := runCLI(t, bad, "device", "list"); err == nil || !strings.Contains(err.Error(), "IotHubUnauthorizedAccess") {
		t.Errorf("wrong key: %v", err)
	}
}

func TestServeFlagErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = runCLI(t, noEnv, "serve", "--data", t.TempDir(), "--https-addr", busy.Addr().String(), "--mqtt-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), "443") {
		t.Errorf("busy port: %v; want a message that says why and mentions port 443", err)
	}
	if _, err := runCLI(t, noEnv, "serve", "--data", t.TempDir(), "--log-level", "loud"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("bad log level: %v", err)
	}
	if _, err := runCLI(t, envOf(map[string]string{"HERD_METRICS_PUBLIC": "maybe"}), "serve", "--data", t.TempDir()); err == nil || !strings.Contains(err.Error(), "HERD_METRICS_PUBLIC") {
		t.Errorf("bad env value: %v", err)
	}
	if _, err := runCLI(t, noEnv, "serve", "--data", t.TempDir(), "--tls-cert", "x.pem"); err == nil || !strings.Contains(err.Error(), "tls-key") {
		t.Errorf("cert without key: %v", err)
	}
}

// TestSignalStopsServe runs the real binary and stops it with SIGTERM.
func TestSignalStopsServe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	serve := serveProcess(t, buildHerd(t), t.TempDir(), "--log-level", "info")
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- serve.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM:\n%s", err, serve.stderr.String())
		}
		if !strings.Contains(serve.stderr.String(), "hub stopped") {
			t.Errorf("no clean-shutdown log line:\n%s", serve.stderr.String())
		}
	case <-time.After(20 * time.Second):
		serve.Process.Kill()
		t.Fatal("serve did not stop on SIGTERM")
	}
}

// TestEnvEmptyValues: a HERD_* variable set to "" counts for the flags
// where "" means something (HERD_MQTT_ADDR="" turns MQTT off, as
// --mqtt-addr "" does) and is ignored for the others; a flag on the command
// line wins over the variable.
func TestEnvEmptyValues(t *testing.T) {
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want map[string]string
	}{
		{map[string]string{"HERD_MQTT_ADDR": "", "HERD_MQTT_PLAIN_ADDR": ""}, nil,
			map[string]string{"mqtt-addr": "", "mqtt-plain-addr": ""}},
		{map[string]string{"HERD_MQTT_ADDR": "127.0.0.1:0"}, []string{"--mqtt-addr", ""},
			map[string]string{"mqtt-addr": ""}},
		{map[string]string{"HERD_MQTT_ADDR": ""}, []string{"--mqtt-addr", "127.0.0.1:0"},
			map[string]string{"mqtt-addr": "127.0.0.1:0"}},
		{map[string]string{"HERD_LOG_LEVEL": "", "HERD_HTTPS_ADDR": "", "HERD_JOB_RETENTION": "", "HERD_METRICS_PUBLIC": ""}, nil,
			map[string]string{"log-level": "info", "https-addr": ":443", "job-retention": "720h0m0s", "metrics-public": "false"}},
		{map[string]string{}, nil, map[string]string{"mqtt-addr": ":8883"}},
	} {
		cmd := serveCommand(e)
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := bindEnv(cmd, envOf(tc.env)); err != nil {
			t.Errorf("%v %v: %v", tc.env, tc.args, err)
			continue
		}
		for flag, want := range tc.want {
			if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
				t.Errorf("%v %v: --%s = %q, want %q", tc.env, tc.args, flag, got, want)
			}
		}
	}
}
