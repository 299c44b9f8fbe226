//go:build unix

package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoFileLimit runs herd demo in a child process (this test binary,
// re-executed) whose open-file limit is lowered to 256: 300 devices over
// MQTT/TLS would need 600 files for both ends of their connections, so the
// demo must use the in-memory transport, say so, and complete.
func TestDemoFileLimit(t *testing.T) {
	const childEnv = "HERD_TEST_DEMO_NOFILE_CHILD"
	if os.Getenv(childEnv) != "" {
		lim := syscall.Rlimit{}
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		lim.Cur = 256
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		// A guard against a demo that hangs on failing connections, not a
		// measure of speed.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out := &syncBuffer{}
		err := run(ctx, []string{"demo", "--devices", "300", "--start-delay", "0s", "--data", t.TempDir()}, noEnv, strings.NewReader(""), out, out)
		if err != nil {
			t.Fatalf("demo with RLIMIT_NOFILE 256: %v\n%s", err, out)
		}
		for _, want := range []string{
			"transport  in-memory (MQTT in this process, no sockets): 300 devices over MQTT/TLS would need ~856 open files",
			"its limit is 256",
			"300 simulated devices connected through the in-memory transport",
			"150 of 150 devices in building 43 answered lockDoor; 150 reported floor 3 back",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		return
	}
	if testing.Short() {
		t.Skip("runs the demo in a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDemoFileLimit$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestDemoFileLimit") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
