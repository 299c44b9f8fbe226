package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/hubtest"
)

// TestDemo runs herd demo with few devices in plain mode, checks its
// summary, and then checks the summary against the hub's data.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	out, err := runCLI(t, noEnv, "demo", "--devices", "40", "--start-delay", "1s", "--data", dir)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, re := range []string{
		`40 devices registered through the REST API \(0 existed\): 20 in building 43, 20 in building 44`,
		`40 simulated devices connected over MQTT/TLS`,
		`(?m)^\s+lockdoor-\S+\s+completed\s+20\s+20\s+0\s+\S+\s+\d+\s*$`,
		`(?m)^\s+desired-\S+\s+completed\s+20\s+20\s+0\s+\S+\s+\d+\s*$`,
		`20 of 20 devices in building 43 answered lockDoor; 20 reported floor 3 back`,
		`these 40 operations would take it 4s`,
		`herd job list --data herd-demo`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
	// Plain mode: no terminal escapes, one line per change.
	if strings.Contains(out, "\x1b[") || !strings.Contains(out, "running") {
		t.Errorf("not plain output:\n%q", out)
	}

	// The hub's data agrees: building 43 has floor 3 desired and reported,
	// building 44 is untouched, every lockDoor record completed with the
	// device's answer.
	h := hubtest.Start(t, hubtest.WithDir(dir), hubtest.WithSQLite()) // the demo's own database
	ctx := context.Background()
	count := func(q string) int {
		t.Helper()
		page, err := h.Service.QueryPage(ctx, q, 10, "")
		if err != nil || len(page.Items) != 1 {
			t.Fatalf("%s: %v %v", q, page, err)
		}
		var row struct{ N int }
		if err := json.Unmarshal(page.Items[0], &row); err != nil {
			t.Fatal(err)
		}
		return row.N
	}
	for q, want := range map[string]int{
		"SELECT COUNT() AS n FROM devices WHERE tags.building = 43 AND properties.desired.floor = 3 AND properties.reported.floor = 3": 20,
		"SELECT COUNT() AS n FROM devices WHERE tags.building = 44 AND NOT IS_DEFINED(properties.desired.floor)":                       20,
		"SELECT COUNT() AS n FROM devices WHERE NOT IS_DEFINED(properties.reported.floor) AND tags.building = 44":                      20,
	} {
		if n := count(q); n != want {
			t.Errorf("%s: %d, want %d", q, n, want)
		}
	}
	jobID := regexp.MustCompile(`lockdoor-\d{8}-\d{6}`).FindString(out)
	q := fmt.Sprintf("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '%s' AND devices.jobs.status = 'completed' AND devices.jobs.outcome.deviceMethodResponse.status = 200", jobID)
	page, err := h.Service.QueryPage(ctx, q, 100, "")
	if err != nil || len(page.Items) != 20 {
		t.Errorf("%s: %d records, want 20 (%v)", q, len(page.Items), err)
	}
}

// TestDemoKeep: --keep leaves the hub running and prints what the
// official SDKs need; Ctrl-C stops it.
func TestDemoKeep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--keep", "--devices", "4", "--start-delay", "0s", "--data", t.TempDir(),
			"--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"}, noEnv, strings.NewReader(""), out, out)
	}()
	hubtest.Eventually(t, 60*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("demo --keep ended: %v\n%s", err, out)
		default:
		}
		return strings.Contains(out.String(), "starts this hub again")
	}, "demo --keep to print how to reach the hub:\n%s", out)
	text := out.String()
	for _, want := range []string{"The hub keeps running with its 4 devices", "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=",
		"HostName=localhost;DeviceId=door-000000;SharedAccessKey=", "NODE_EXTRA_CA_CERTS=", "not 443: the official service SDKs only reach port 443"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo --keep: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo --keep did not stop")
	}
}

func TestDemoFlags(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"--devices 1", "--devices 1: give at least 2"},
		{"--start-delay -1s", "must not be negative"},
	} {
		_, err := runCLI(t, noEnv, append([]string{"demo"}, strings.Fields(tc.args)...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestDemoAllInterfaces: a demo hub that listens on every interface (as
// `herd demo --keep` does on :443 and :8883) is reached through its host
// name, which its certificate covers, not through the listen address
// ([::]:port), which it does not.
func TestDemoAllInterfaces(t *testing.T) {
	out, err := runCLI(t, noEnv, "demo", "--devices", "4", "--start-delay", "0s", "--data", t.TempDir(),
		"--https-addr", ":0", "--mqtt-addr", ":0")
	if err != nil {
		t.Fatalf("demo on :0: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`hub\s+https://localhost:\d+ `).MatchString(out) ||
		!strings.Contains(out, "2 of 2 devices in building 43 answered lockDoor") {
		t.Errorf("output:\n%s", out)
	}
}

// TestDemoTransport: the demo connects over MQTT/TLS when both ends of
// every connection fit in the open-file limit, and through the in-memory
// transport otherwise or when its hub has no MQTT listener.
func TestDemoTransport(t *testing.T) {
	for _, tc := range []struct {
		devices int
		mqtt    bool
		limit   uint64
		known   bool
		memory  bool
		why     string
	}{
		{3000, true, 20000, true, false, "MQTT over TLS on loopback: 3000 devices need ~6256 of this process's 20000 open files"},
		{9872, true, 20000, true, false, "9872 devices need ~20000 of"},
		{9873, true, 20000, true, true, "9873 devices over MQTT/TLS would need ~20002 open files"},
		{10000, true, 20000, true, true, "its limit is 20000"},
		{10000, true, 0, false, false, "MQTT over TLS on loopback"},
		{40, false, 20000, true, true, `MQTT over TLS is off (--mqtt-addr "")`},
	} {
		tr := chooseTransport(tc.devices, tc.mqtt, tc.limit, tc.known)
		if tr.memory != tc.memory || !strings.Contains(tr.why, tc.why) {
			t.Errorf("%d devices, mqtt %v, limit %d (%v): memory %v %q; want %v %q", tc.devices, tc.mqtt, tc.limit, tc.known, tr.memory, tr.why, tc.memory, tc.why)
		}
	}
}

// TestDemoNoMQTT: HERD_MQTT_ADDR="" (like --mqtt-addr "") turns the demo
// hub's MQTT listener off; the devices then use the in-memory transport.
func TestDemoNoMQTT(t *testing.T) {
	out, err := runCLI(t, envOf(map[string]string{"HERD_MQTT_ADDR": ""}), "demo", "--devices", "6", "--start-delay", "0s", "--data", t.TempDir())
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"MQTT/TLS off", `the hub's MQTT over TLS is off (--mqtt-addr "")`,
		"6 simulated devices connected through the in-memory transport", "3 of 3 devices in building 43 answered lockDoor"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
