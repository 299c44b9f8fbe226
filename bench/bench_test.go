package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/herd-iot/herd/internal/store/pgtest"
)

// TestMain lets the test binary play the fleet child, as the bench
// program does.
func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "fleet":
		if err := fleetMain(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench fleet:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "node":
		if err := nodeMain(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench node:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestQuickAtSmallScale runs every section of the harness at a tiny scale
// and checks that the report has every row with a figure (no timing is
// asserted: figures depend on the machine).
func TestQuickAtSmallScale(t *testing.T) {
	stores, flag := []string{"SQLite", "PostgreSQL"}, "sqlite,postgres"
	if _, err := pgtest.BinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI: %v", err)
		}
		t.Logf("PostgreSQL not available, measuring SQLite only: %v", err)
		stores, flag = stores[:1], "sqlite"
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--quick", "--gateway-devices", "60", "--round-trips", "300ms", "--inflight", "20",
		"--pipe-devices", "100,150", "--twin-devices", "200,300", "--query-twins", "400", "--start-jobs", "3",
		"--import-devices", "250", "--copy-devices", "300", "--stores", flag, "--dir", t.TempDir()}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	text := out.String()
	peers := []string{
		`\| Mosquitto [\d.]+: first connects, plain MQTT, 64 in flight .* \| Mosquitto \(persistence off\) \| 60 devices \| \*\*[\d,]+/s\*\*`,
		`\| Mosquitto [\d.]+: CPU per first connect .* \| 60 devices \| \*\*\d+ µs\*\*`,
		`\| Mosquitto [\d.]+: RSS per idle connection .* \| 60 devices \| \*\*-?[\d.]+ KB\*\*`,
		`\| Mosquitto [\d.]+: method round trips .* \| 60 devices \| \*\*[\d,]+/s\*\*, p50 \S+ m?s, p99 \S+ m?s, 0 errors`,
	}
	if _, err := findMosquitto(); err != nil {
		t.Logf("Mosquitto not available, the peer rows not checked: %v", err) // CI fails in the run itself
		peers = nil
	}
	for _, re := range append(peers, []string{
		`(?m)^- Machine: .+ cores`,
		`(?m)^- Load average .+ at the start: \S+, \S+, \S+`,
		`(?m)^- Command: .flock /tmp/herd-bench.lock go run ./bench --quick`,
		"\\| `herd store copy` of a hub .*, SQLite → PostgreSQL \\| both \\| 300 devices \\(jobs fleet\\) \\| \\*\\*.+\\*\\* \\([\\d,]+ devices/s\\)",
		"\\| `herd store copy` of a hub .*, PostgreSQL → SQLite \\| both \\| 300 devices",
	}...) {
		if len(stores) == 1 && strings.Contains(re, "PostgreSQL") {
			continue
		}
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("report does not match %s", re)
		}
	}
	for _, st := range stores {
		for _, re := range []string{
			`\| SAS-authenticated connects, plain MQTT, first connect .* \| ` + st + ` \| 60 devices \| \*\*[\d,]+/s\*\*`,
			`\| hub RSS per idle connected device, plain MQTT .* \| ` + st + ` \| 60 devices \| \*\*-?[\d.]+ KB\*\*`,
			`\| direct-method round trips .* \| ` + st + ` \| 60 devices \| \*\*[\d,]+/s\*\*, p50 \S+ m?s, p99 \S+ m?s, 0 errors`,
			`\| method job, devices over plain MQTT sockets .* \| ` + st + ` \| 60 devices \| \*\*[\d,]+ devices/s\*\* .* \| 6 s \| 1 s \| 4 s \|`,
			`\| SAS-authenticated connects, plain MQTT, reconnect .* \| ` + st + ` \| 60 devices \| \*\*[\d,]+/s\*\*`,
			`\| method job, devices through the in-memory transport .* \| ` + st + ` \| 150 devices \| \*\*[\d,]+ devices/s\*\*`,
			`\| twin-update job .* \| ` + st + ` \| 200 registered devices \| \*\*.+\*\* \([\d,]+ devices/s\) \|\s*\| 20 s \| 4 s \| 12 s \|`,
			`\| twin-update job .* \| ` + st + ` \| 300 registered devices \|`,
			`\| the same merge as one raw SQL UPDATE .* \| ` + st + ` \| 300 registered devices \| \*\*.+\*\*, job \*\*[\d.]+×\*\*`,
			"\\| twin query `SELECT \\* FROM devices WHERE tags.building = 43`: first page .* \\| " + st + " \\| 400 twins \\| \\*\\*.+\\*\\* \\(\\d+ items?\\) \\| ≤ 1 s \\|",
			"\\| twin query `SELECT tags.building, COUNT\\(\\) AS n FROM devices GROUP BY tags.building`: .* \\| " + st + " \\| 400 twins \\| \\*\\*.+\\*\\* \\(\\d+ items?\\) \\|\\s*\\|",
			`\| bulk import through the registry API .* \| ` + st + ` \| 250 devices \| \*\*.+\*\* \([\d,]+ devices/s\)`,
			`\| job start after its .startTime. .* \| ` + st + ` \| 3 jobs \| \*\*p50 .+, p99 .+, max .+\*\* \| within 1 s \|`,
			`In-memory fleet of 150 devices \(` + st + `\): connected in`,
			// The ratios, in their own table.
			`\| method job devices/s ÷ direct-method round trips/s .* \| ` + st + ` \| 60 devices \| [\d.]+ \([\d,]+/s ÷ [\d,]+/s\) \| ≥ 0.9 \|`,
			`\| time per device of a method job, 100 → 150 devices .* \| ` + st + ` \|  \| [\d.]+× \(`,
			`\| twin job ÷ one raw UPDATE .* \| ` + st + ` \| 300 registered devices \| [\d.]+× \(.+ ÷ .+\) \| ≤ 1.3× \|`,
			"\\| `SELECT COUNT\\(\\) FROM devices WHERE tags.building = 43`, the query service ÷ hand-written SQL .* \\| " + st + " \\| 400 twins \\| [\\d.]+ \\(",
			"\\| `SELECT COUNT\\(\\) FROM devices WHERE properties.reported.fw != '1.2'`, the query service ÷ hand-written SQL .* \\| " + st + " \\| 400 twins \\| [\\d.]+ \\(",
		} {
			if !regexp.MustCompile(re).MatchString(text) {
				t.Errorf("report does not match %s", re)
			}
		}
		if len(peers) > 0 {
			for _, re := range []string{
				`\| Herd: first connects, plain MQTT, 64 in flight .* \| ` + st + ` \| 60 devices \| \*\*[\d,]+/s\*\*`,
				`\| Herd: RSS per idle connection .* \| ` + st + ` \| 60 devices \| \*\*-?[\d.]+ KB\*\* \(-?[\d.]+ KB after a forced garbage collection: Go heap -?[\d.]+ KB, goroutine stacks -?[\d.]+ KB, mapped file pages -?[\d.]+ KB\)`,
				`\| hub CPU per first SAS connect ÷ Mosquitto's \| ` + st + ` \| 60 devices \| ([\d.]+× \(\d+ µs ÷ \d+ µs\)|— \(Mosquitto's CPU under the 10 ms clock tick.*\)) \| ≤ 1.0× \|`,
				`\| first connects/s at 64 in flight ÷ Mosquitto's \| ` + st + ` \| 60 devices \| [\d.]+ \(`,
				`\| hub RSS per idle connection ÷ Mosquitto's .* \| ` + st + ` \| 60 devices \| -?[\d.]+ \(`,
				`\| round trips ÷ Mosquitto's .* \| ` + st + ` \| 60 devices \| [\d.]+ \(`,
			} {
				if !regexp.MustCompile(re).MatchString(text) {
					t.Errorf("report does not match %s", re)
				}
			}
		}
		if n := strings.Count(text, "| twin query"); n != 7*len(stores) {
			t.Errorf("%d query rows, want %d", n, 7*len(stores))
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s\nlog:\n%s", text, errOut.String())
	}
}

// TestClusterAtSmallScale runs the cluster section (--cluster) with 2
// nodes and 100 devices and checks that the report has each of its rows.
func TestClusterAtSmallScale(t *testing.T) {
	if _, err := pgtest.BinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI: %v", err)
		}
		t.Skipf("PostgreSQL not available: %v", err)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--cluster", "--quick", "--cluster-nodes", "2", "--cluster-devices", "100", "--cluster-twin-devices", "300",
		"--round-trips", "300ms", "--inflight", "20", "--stores", "postgres", "--dir", t.TempDir()}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench --cluster: %v\n%s", err, errOut.String())
	}
	text := out.String()
	for _, re := range []string{
		`\| cluster: SAS-authenticated first connects .* \| PostgreSQL \| 100 devices, 2 nodes \| \*\*[\d,]+/s\*\*`,
		`\| cluster: node RSS per idle connected device .* \| PostgreSQL \| 100 devices, 2 nodes \| \*\*-?[\d.]+ KB\*\*`,
		`\| cluster: direct-method round trips to devices on the same node, 20 in flight \| PostgreSQL \| .* \| \*\*[\d,]+/s\*\*, p50 .*, 0 errors`,
		`\| cluster: direct-method round trips to devices on other nodes .* \| \*\*[\d,]+/s\*\*, p50 .*, 0 errors`,
		`\| cluster: method job over every node's devices.* \| \*\*[\d,]+ devices/s\*\*`,
		"\\| cluster: twin-update job .* \\| PostgreSQL \\| 300 registered devices, 2 nodes \\| \\*\\*.+\\*\\* \\([\\d,]+ devices/s\\)",
		`\| cluster: failover, kill -9 .* \| \*\*.+\*\* \(the job then completed: \d+ succeeded, \d+ failed`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("report does not match %s", re)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s\nlog:\n%s", text, errOut.String())
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"--only nothing", `--only "nothing"`},
		{"--twin-devices 10,x", "--twin-devices"},
		{"--gateway-devices 30000", "at most ~19,000 sockets"},
		{"extra", "unexpected arguments"},
		{"--stores mysql", `--stores "mysql"`},
		{"--cluster --only query", "--cluster runs the cluster section alone"},
		{"--cluster-nodes 1", "at least 2 nodes"},
		{"--peers --only query", "--peers runs its own sections"},
		{"--peers --cluster", "separate runs"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), strings.Fields(tc.args), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestPeersSelects checks what --peers runs: every section that measures
// Herd against a limit in the same run, with two in-memory fleet sizes.
func TestPeersSelects(t *testing.T) {
	c, err := parseConfig([]string{"--peers"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sectionNames {
		if want := slices.Contains(peerSections, s); c.sections[s] != want {
			t.Errorf("section %s: runs %v, want %v", s, c.sections[s], want)
		}
	}
	if !slices.Equal(c.pipeDevices, []int{10_000, 100_000}) {
		t.Errorf("in-memory fleets %v, want 10000 and 100000", c.pipeDevices)
	}
}
