package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestMain lets the test binary play the fleet child, as the bench
// program does.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "fleet" {
		if err := fleetMain(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench fleet:", err)
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
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--quick", "--gateway-devices", "60", "--round-trips", "300ms", "--inflight", "20",
		"--pipe-devices", "150", "--twin-devices", "200,300", "--query-twins", "400", "--start-jobs", "3", "--dir", t.TempDir()}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	text := out.String()
	for _, re := range []string{
		`(?m)^- Machine: .+ cores`,
		`(?m)^- Load average .+ at the start: \S+, \S+, \S+`,
		`(?m)^- Command: .flock /tmp/herd-bench.lock go run ./bench --quick`,
		`\| SAS-authenticated connects, plain MQTT, first connect .* \| 60 devices \| \*\*[\d,]+/s\*\*`,
		`\| hub RSS per idle connected device, plain MQTT .* \| 60 devices \| \*\*-?[\d.]+ KB\*\*`,
		`\| direct-method round trips .* \| 60 devices \| \*\*[\d,]+/s\*\*, p50 \S+ m?s, p99 \S+ m?s, 0 errors`,
		`\| method job, devices over plain MQTT sockets .* \| 60 devices \| \*\*[\d,]+ devices/s\*\* .* \| 6 s \| 1 s \| 4 s \|`,
		`\| SAS-authenticated connects, plain MQTT, reconnect .* \| 60 devices \| \*\*[\d,]+/s\*\*`,
		`\| method job, devices through the in-memory transport .* \| 150 devices \| \*\*[\d,]+ devices/s\*\*`,
		`\| twin-update job .* \| 200 registered devices \| \*\*.+\*\* \([\d,]+ devices/s\) \|\s*\| 20 s \| 4 s \| 12 s \|`,
		`\| twin-update job .* \| 300 registered devices \|`,
		"\\| twin query `SELECT \\* FROM devices WHERE tags.building = 43`: first page .* \\| 400 twins \\| \\*\\*.+\\*\\* \\(\\d+ items?\\) \\| ≤ 1 s \\|",
		"\\| twin query `SELECT tags.building, COUNT\\(\\) AS n FROM devices GROUP BY tags.building`: .* \\| 400 twins \\| \\*\\*.+\\*\\* \\(\\d+ items?\\) \\|\\s*\\|",
		`\| job start after its .startTime. .* \| 3 jobs \| \*\*p50 .+, p99 .+, max .+\*\* \| within 1 s \|`,
		`In-memory fleet of 150 devices: connected in`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("report does not match %s", re)
		}
	}
	if n := strings.Count(text, "| twin query"); n != 7 {
		t.Errorf("%d query rows, want 7", n)
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
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), strings.Fields(tc.args), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.args, err, tc.want)
		}
	}
}
