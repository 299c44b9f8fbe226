package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/store"
)

// runCLISplit runs the CLI in-process and returns stdout and stderr apart.
func runCLISplit(t *testing.T, lookupEnv func(string) (string, bool), args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut syncBuffer
	err = run(context.Background(), args, lookupEnv, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestNoHub: when nothing listens where the hub should be, the CLI says so
// instead of printing the dial error.
func TestNoHub(t *testing.T) {
	// A hub's data folder, with the hub stopped: its recorded port is closed.
	h := hubtest.Start(t)
	_, port, _ := net.SplitHostPort(h.HTTPSAddr().String())
	h.Stop()
	args := []string{"device", "list", "--data", h.Dir}
	if spec := hubtest.StoreFor(t, h.Dir); spec != "" {
		args = append(args, "--store", spec) // HERD_TEST_STORE=postgres
	}
	_, err := runCLI(t, noEnv, args...)
	want := fmt.Sprintf("no hub answers at https://localhost:%s (is `herd serve` running?)", port)
	if err == nil || err.Error() != want {
		t.Errorf("device list on a stopped hub: %v; want %q", err, want)
	}

	// An explicit --url where nothing listens.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_URL": "https://" + addr})
	for _, args := range [][]string{{"twin", "show", "x"}, {"job", "list"}, {"query", "SELECT * FROM devices"}} {
		_, err := runCLI(t, env, args...)
		want := "no hub answers at https://" + addr + " (is `herd serve` running?)"
		if err == nil || err.Error() != want {
			t.Errorf("%v: %v; want %q", args, err, want)
		}
	}
}

// TestDeviceListLimit: device list says on stderr when there are more
// devices than it shows, and how to see them.
func TestDeviceListLimit(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	for i := range 5 {
		if _, err := h.Service.CreateDevice(context.Background(), herd.Device{DeviceID: fmt.Sprintf("d%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args     []string
		rows     int
		stderr   []string
		noStderr bool
	}{
		{[]string{"--top", "3"}, 3, []string{"showing the first 3 of 5 devices", "--top", "herd query"}, false},
		{[]string{"--top", "3", "-o", "json"}, 3, []string{"showing the first 3 of 5 devices"}, false},
		{[]string{"--top", "5"}, 5, nil, true},
		{nil, 5, nil, true},
	} {
		stdout, stderr, err := runCLISplit(t, env, append([]string{"device", "list"}, tc.args...)...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if n := len(regexp.MustCompile(`(?m)^d\d\s|"deviceId": "d\d"`).FindAllString(stdout, -1)); n != tc.rows {
			t.Errorf("%v: %d devices shown, want %d:\n%s", tc.args, n, tc.rows, stdout)
		}
		for _, w := range tc.stderr {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", tc.args, w, stderr)
			}
		}
		if tc.noStderr && stderr != "" {
			t.Errorf("%v: stderr %q, want nothing", tc.args, stderr)
		}
	}
	if _, err := runCLI(t, env, "device", "list", "--top", "1001"); err == nil || !strings.Contains(err.Error(), "at most 1000") {
		t.Errorf("--top 1001: %v", err)
	}
}

// TestDeviceDisableEnableRegenerate: herd device disable, enable and
// regenerate-key change the device in the registry through the REST API.
func TestDeviceDisableEnableRegenerate(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	orig, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "dev1"})
	if err != nil {
		t.Fatal(err)
	}
	get := func() *herd.Device {
		t.Helper()
		d, err := h.Service.GetDevice(ctx, "dev1")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	reason := func(d *herd.Device) string {
		if d.StatusReason == nil {
			return ""
		}
		return *d.StatusReason
	}

	if out, err := runCLI(t, env, "device", "disable", "dev1", "--reason", "stolen"); err != nil || !strings.Contains(out, "disabled dev1") {
		t.Fatalf("disable: %v\n%s", err, out)
	}
	if d := get(); d.Status != herd.DeviceDisabled || reason(d) != "stolen" || d.Authentication.SymmetricKey != orig.Authentication.SymmetricKey {
		t.Errorf("after disable: %s %q %+v", d.Status, reason(d), d.Authentication.SymmetricKey)
	}
	if out, err := runCLI(t, env, "device", "enable", "dev1"); err != nil || !strings.Contains(out, "enabled dev1") {
		t.Fatalf("enable: %v\n%s", err, out)
	}
	if d := get(); d.Status != herd.DeviceEnabled || reason(d) != "" {
		t.Errorf("after enable: %s %q", d.Status, reason(d))
	}

	keys := func(d *herd.Device) (string, string) {
		return d.Authentication.SymmetricKey.PrimaryKey, d.Authentication.SymmetricKey.SecondaryKey
	}
	valid := func(k string) bool {
		b, err := base64.StdEncoding.DecodeString(k)
		return err == nil && len(b) == 32
	}
	p0, s0 := keys(get())
	if out, err := runCLI(t, env, "device", "regenerate-key", "dev1", "--primary"); err != nil || !strings.Contains(out, `"primaryKey"`) {
		t.Fatalf("regenerate-key --primary: %v\n%s", err, out)
	}
	p1, s1 := keys(get())
	if p1 == p0 || !valid(p1) || s1 != s0 {
		t.Errorf("--primary: primary %q→%q, secondary %q→%q", p0, p1, s0, s1)
	}
	if _, err := runCLI(t, env, "device", "regenerate-key", "dev1", "--secondary"); err != nil {
		t.Fatal(err)
	}
	p2, s2 := keys(get())
	if p2 != p1 || s2 == s1 || !valid(s2) {
		t.Errorf("--secondary: primary %q→%q, secondary %q→%q", p1, p2, s1, s2)
	}
	if _, err := runCLI(t, env, "device", "regenerate-key", "dev1", "--both", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	if p3, s3 := keys(get()); p3 == p2 || s3 == s2 || p3 == s3 || !valid(p3) || !valid(s3) {
		t.Errorf("--both: %q %q → %q %q", p2, s2, p3, s3)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"device", "regenerate-key", "dev1"}, "--primary, --secondary or --both"},
		{[]string{"device", "regenerate-key", "dev1", "--primary", "--both"}, "none of the others can be"},
		{[]string{"device", "disable", "nope"}, "DeviceNotFound"},
		{[]string{"device", "regenerate-key", "nope", "--both"}, "DeviceNotFound"},
	} {
		if _, err := runCLI(t, env, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want %q", tc.args, err, tc.want)
		}
	}
}

// TestModuleCLI: herd module create, show, list and delete.
func TestModuleCLI(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "gw"}); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, env, "module", "create", "gw", "$edgeAgent", "--managed-by", "IotEdge")
	if err != nil || !strings.Contains(out, `"moduleId": "$edgeAgent"`) || !strings.Contains(out, `"primaryKey"`) {
		t.Fatalf("create: %v\n%s", err, out)
	}
	thumb := strings.Repeat("AB", 20)
	if _, err := runCLI(t, env, "module", "create", "gw", "cam", "--x509-thumbprint", thumb); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, env, "module", "list", "gw")
	if err != nil || !strings.Contains(out, "MODULE ID") || !strings.Contains(out, "IotEdge") || !strings.Contains(out, "selfSigned") {
		t.Errorf("list: %v\n%s", err, out)
	}
	if out, err := runCLI(t, env, "module", "show", "gw", "cam"); err != nil || !strings.Contains(out, thumb) {
		t.Errorf("show: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "module", "show", "gw", "nope"); err == nil || !strings.Contains(err.Error(), "ModuleNotFound") {
		t.Errorf("show unknown: %v", err)
	}
	if _, err := runCLI(t, env, "module", "create", "nobody", "m"); err == nil || !strings.Contains(err.Error(), "DeviceNotFound") {
		t.Errorf("create on an unknown device: %v", err)
	}
	if out, err := runCLI(t, env, "module", "delete", "gw", "cam"); err != nil || !strings.Contains(out, "deleted module cam of gw") {
		t.Errorf("delete: %v\n%s", err, out)
	}
	if ms, err := h.Service.ListModules(ctx, "gw"); err != nil || len(ms) != 1 {
		t.Errorf("modules left: %+v %v", ms, err)
	}
}

// TestDiscoveryPerDataFolder: two hubs on one store (the nodes of a
// cluster share its settings) each leave where they listen in their own
// data folder, and the CLI given a node's folder reaches that node, not
// whichever started last.
func TestDiscoveryPerDataFolder(t *testing.T) {
	first := hubtest.Start(t)
	// A second hub on the first one's store, as a second node would be:
	// it records its own listeners in the store's shared settings.
	second := hubtest.Start(t, hubtest.WithConfig(func(c *hub.Config) { c.Store = first.Store; c.NodeID = "second" }))
	ctx := context.Background()
	shared, err := first.Store.Setting(ctx, "https_addr")
	if err != nil {
		t.Fatal(err)
	}
	if shared != second.HTTPSAddr().String() {
		t.Fatalf("the store's https_addr %q, want the second hub's %s (the last to start)", shared, second.HTTPSAddr())
	}
	spec := hubtest.StoreFor(t, first.Dir)
	if spec == "" {
		spec = "sqlite:" + filepath.Join(first.Dir, store.SQLiteFile)
	}
	for _, h := range []*hubtest.Hub{first, second} {
		l, err := localHub(ctx, spec, h.Dir)
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(h.HTTPSAddr().String())
		if !strings.HasSuffix(l.url, ":"+port) {
			t.Errorf("--data %s: the CLI would call %s, want this folder's hub on port %s", h.Dir, l.url, port)
		}
		if got := localListeners(ctx, spec, h.Dir)["mqtt_plain_addr"]; got != h.MQTTPlainAddr {
			t.Errorf("--data %s: herd sim would dial %q, want %s", h.Dir, got, h.MQTTPlainAddr)
		}
	}
}
