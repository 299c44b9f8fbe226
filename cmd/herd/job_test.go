package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

func TestJobCLI(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	for _, id := range []string{"a", "b"} {
		if _, err := h.Service.CreateDevice(context.Background(), herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	// --wait watches with plain lines (stdout is not a terminal).
	out, err := runCLI(t, env, "job", "schedule-twin", "fw", "--desired", `{"fw":"2.0"}`, "--tags", `{"ring":1}`, "--query", "*", "--wait")
	if err != nil || !strings.Contains(out, "fw completed: 2 devices, 2 succeeded, 0 failed") {
		t.Fatalf("schedule-twin --wait: %v\n%s", err, out)
	}
	if tw, _ := h.Service.GetTwin(context.Background(), "a"); tw.Properties.Desired["fw"] != "2.0" {
		t.Errorf("twin not patched: %v", tw.Properties.Desired)
	}
	out, err = runCLI(t, env, "job", "show", "fw")
	if err != nil || !strings.Contains(out, "completed") || !strings.Contains(out, "Devices:   2 (succeeded 2, failed 0, running 0, pending 0)") {
		t.Errorf("show: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "schedule-twin", "later", "--tags", `{"x":1}`, "--query", "*", "--start", "1h", "-o", "json")
	if err != nil || !strings.Contains(out, `"status": "queued"`) {
		t.Fatalf("schedule later: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "pause", "later")
	if err != nil || !strings.Contains(out, "paused") {
		t.Errorf("pause: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "resume", "later")
	if err != nil || strings.Contains(out, "paused") {
		t.Errorf("resume: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "cancel", "later")
	if err != nil || !strings.Contains(out, "cancelled") {
		t.Errorf("cancel: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "list", "--status", "Cancelled")
	if err != nil || !strings.Contains(out, "later") || strings.Contains(out, "fw ") {
		t.Errorf("list --status: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "list")
	if err != nil || !strings.Contains(out, "JOB ID") || !strings.Contains(out, "scheduleUpdateTwin") || strings.Count(out, "\n") != 3 {
		t.Errorf("list: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "watch", "fw")
	if err != nil || !strings.Contains(out, "fw completed") {
		t.Errorf("watch a finished job: %v\n%s", err, out)
	}
	// A condition that does not parse is refused by the hub.
	out, err = runCLI(t, env, "job", "schedule-twin", "bad", "--tags", `{"x":1}`, "--query", "no such ((", "--wait")
	if err == nil || !strings.Contains(err.Error(), "queryCondition") {
		t.Errorf("bad condition: %v\n%s", err, out)
	}
	// A job that fails (its deadline passes while it waits for offline
	// devices) makes --wait fail.
	out, err = runCLI(t, env, "job", "schedule-method", "late", "--method", "m", "--query", "*", "--connect-timeout", "60", "--max-time", "1s", "--wait")
	if err == nil || !strings.Contains(err.Error(), "job late failed") {
		t.Errorf("failing job: %v\n%s", err, out)
	}
	// Bad input is refused before or by the hub.
	if _, err := runCLI(t, env, "job", "schedule-method", "m1"); err == nil || !strings.Contains(err.Error(), "--method") {
		t.Errorf("no --method: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-method", "m1", "--method", "x", "--query", "*", "--connect-timeout", "301"); err == nil || !strings.Contains(err.Error(), "connectTimeoutInSeconds") {
		t.Errorf("bad connect timeout: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-twin", "fw", "--tags", `{"x":1}`, "--query", "*"); err == nil || !strings.Contains(err.Error(), "JobAlreadyExists") {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-twin", "x", "--tags", `{"x":1}`, "--query", "*", "--start", "someday"); err == nil || !strings.Contains(err.Error(), "--start") {
		t.Errorf("bad start: %v", err)
	}
	// Abort criteria: sent in the job's herd member, shown by job show;
	// a malformed flag is refused before the hub, a bad type by it.
	out, err = runCLI(t, env, "job", "schedule-twin", "guarded", "--tags", `{"x":2}`, "--query", "*",
		"--abort", "Any:10%:5", "--abort", "DeviceNotOnline:50", "--wait")
	if err != nil {
		t.Fatalf("--abort: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "show", "guarded")
	if err != nil || !strings.Contains(out, "Any at 10% of at least 5 executed") ||
		!strings.Contains(out, "DeviceNotOnline at 50% of at least 1 executed") {
		t.Errorf("show guarded: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "schedule-method", "paced", "--method", "m", "--query", "*", "--start", "1h",
		"--rate", "600", "--ramp", "50:2:1000", "--abort", "Failed:5", "--abort-failed", "20%")
	if err != nil || !strings.Contains(out, "50 devices a minute, times 2 each 1000 that succeed, up to 600") ||
		!strings.Contains(out, "Failed at 5% of at least 1 executed") || !strings.Contains(out, "Any at 20% of at least 1 executed") {
		t.Errorf("--rate --ramp: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "schedule-method", "retried", "--method", "m", "--query", "*", "--start", "1h",
		"--retry", "DeviceNotOnline:5", "--retry", "TimedOut:2", "--retry-backoff", "1m", "--retry-factor", "3")
	if err != nil || !strings.Contains(out, "DeviceNotOnline up to 5 attempts, waiting 60s times 3") ||
		!strings.Contains(out, "TimedOut up to 2 attempts, waiting 60s times 3") {
		t.Errorf("--retry: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "job", "schedule-method", "retried2", "--method", "m", "--query", "*", "--start", "1h", "--retry", "Any:3")
	if err != nil || !strings.Contains(out, "Any up to 3 attempts, waiting 30s times 2") {
		t.Errorf("--retry with the default backoff: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "job", "schedule-method", "r3", "--method", "m", "--query", "*", "--retry", "Any"); err == nil || !strings.Contains(err.Error(), "TYPE:MAX-ATTEMPTS") {
		t.Errorf("--retry Any: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-method", "r4", "--method", "m", "--query", "*", "--retry", "Any:1"); err == nil || !strings.Contains(err.Error(), "maxAttempts") {
		t.Errorf("--retry Any:1: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-method", "r5", "--method", "m", "--query", "*", "--retry-backoff", "5s"); err == nil || !strings.Contains(err.Error(), "--retry") {
		t.Errorf("--retry-backoff alone: %v", err)
	}
	out, err = runCLI(t, env, "job", "schedule-twin", "always", "--tags", `{"c":1}`, "--query", "tags.c = 1", "--continuous", "--max-time", "10m")
	if err != nil || !strings.Contains(out, "Continuous:") || !strings.Contains(out, "devices that start matching the query are targeted too") {
		t.Errorf("--continuous: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "job", "schedule-twin", "c2", "--tags", `{"c":1}`, "--query", "*", "--continuous", "--waves", "10,100"); err == nil || !strings.Contains(err.Error(), "waves") {
		t.Errorf("--continuous --waves: %v", err)
	}
	out, err = runCLI(t, env, "job", "schedule-twin", "waved", "--tags", `{"w":1}`, "--query", "*", "--waves", "50,100", "--pause-between-waves")
	if err != nil || !strings.Contains(out, "Waves:") || !strings.Contains(out, "50%, 100%, pausing between waves") {
		t.Errorf("--waves: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out, err := runCLI(t, env, "job", "show", "waved", "-o", "json")
		if err == nil && strings.Contains(out, `"status": "paused"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job with waves did not pause after its first wave: %v\n%s", err, out)
		}
	}
	if _, err := runCLI(t, env, "job", "resume", "waved"); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, env, "job", "watch", "waved"); err != nil || !strings.Contains(out, "completed") || !strings.Contains(out, "wave 2/2") {
		t.Errorf("watch a job with waves: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "job", "schedule-twin", "g6", "--tags", `{"x":1}`, "--query", "*", "--waves", "50,10"); err == nil || !strings.Contains(err.Error(), "cumulative") {
		t.Errorf("--waves 50,10: %v", err)
	}
	// --preview without a terminal shows the preview and schedules nothing.
	out, err = runCLI(t, env, "job", "schedule-twin", "previewed", "--tags", `{"p":1}`, "--query", "*", "--preview", "--rate", "60")
	if err != nil || !strings.Contains(out, "Devices:") || !strings.Contains(out, "rollout's pace") {
		t.Errorf("--preview: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "job", "show", "previewed"); err == nil || !strings.Contains(err.Error(), "JobNotFound") {
		t.Errorf("--preview scheduled the job: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-twin", "g4", "--tags", `{"x":1}`, "--query", "*", "--ramp", "50:2"); err == nil || !strings.Contains(err.Error(), "BASE:FACTOR:EVERY") {
		t.Errorf("--ramp 50:2: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-twin", "g5", "--tags", `{"x":1}`, "--query", "*", "--rate", "-1"); err == nil || !strings.Contains(err.Error(), "maxPerMinute") {
		t.Errorf("--rate -1: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-twin", "g2", "--tags", `{"x":1}`, "--query", "*", "--abort", "Any"); err == nil || !strings.Contains(err.Error(), "TYPE:PERCENT") {
		t.Errorf("--abort Any: %v", err)
	}
	if _, err := runCLI(t, env, "job", "schedule-twin", "g3", "--tags", `{"x":1}`, "--query", "*", "--abort", "Sad:10"); err == nil || !strings.Contains(err.Error(), "failureType") {
		t.Errorf("--abort Sad:10: %v", err)
	}
	if _, err := runCLI(t, env, "job", "show", "nope"); err == nil || !strings.Contains(err.Error(), "JobNotFound") {
		t.Errorf("show unknown: %v", err)
	}
}

// TestJobQueryRequired: scheduling without --query is refused (it used to
// target every device silently); --query "*" targets every device.
func TestJobQueryRequired(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	for _, args := range [][]string{
		{"job", "schedule-method", "m", "--method", "reboot"},
		{"job", "schedule-twin", "t", "--tags", `{"x":1}`},
		{"job", "schedule-twin", "t", "--tags", `{"x":1}`, "--query", ""},
	} {
		_, err := runCLI(t, env, args...)
		if err == nil || !strings.Contains(err.Error(), "--query") || !strings.Contains(err.Error(), `"*"`) {
			t.Errorf("%v: %v; want an error that asks for --query (\"*\" for every device)", args, err)
		}
	}
	if jobs, err := h.Service.ListJobs(context.Background(), service.JobFilter{}); err != nil || len(jobs) != 0 {
		t.Errorf("jobs scheduled without --query: %v %v", jobs, err)
	}
	if out, err := runCLI(t, env, "job", "schedule-twin", "all", "--tags", `{"x":1}`, "--query", "*"); err != nil || !regexp.MustCompile(`Query:\s+\*\n`).MatchString(out) {
		t.Errorf("--query '*': %v\n%s", err, out)
	}
	if out, _ := runCLI(t, env, "job", "schedule-method", "--help"); !strings.Contains(out, `"*" for every device`) || !strings.Contains(out, "required") {
		t.Errorf("help does not say --query is required:\n%s", out)
	}
}

// TestJobWaitDeviceFailed: --wait and watch exit non-zero when a device
// failed, even though the job completed.
func TestJobWaitDeviceFailed(t *testing.T) {
	h := hubtest.Start(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, h.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"HERD_CONNECTION_STRING": h.ConnectionString, "HERD_CA": ca, "HERD_URL": h.URL})
	if _, err := h.Service.CreateDevice(context.Background(), herd.Device{DeviceID: "offline"}); err != nil {
		t.Fatal(err)
	}
	// The device is not connected: the method fails at once (DeviceNotOnline).
	out, err := runCLI(t, env, "job", "schedule-method", "reboot", "--method", "reboot", "--query", "*", "--wait")
	if !strings.Contains(out, "reboot completed: 1 devices, 0 succeeded, 1 failed") {
		t.Fatalf("schedule-method --wait: %v\n%s", err, out)
	}
	if err == nil || !strings.Contains(err.Error(), "1 of 1 devices failed") {
		t.Errorf("schedule-method --wait with a failed device: %v; want an error", err)
	}
	if _, err := runCLI(t, env, "job", "watch", "reboot"); err == nil || !strings.Contains(err.Error(), "1 of 1 devices failed") {
		t.Errorf("watch with a failed device: %v; want an error", err)
	}
	if out, _ := runCLI(t, env, "job", "watch", "--help"); !strings.Contains(out, "non-zero") {
		t.Errorf("watch help does not say when it exits non-zero:\n%s", out)
	}
}

func TestConfirm(t *testing.T) {
	for answer, want := range map[string]bool{"y\n": true, "YES\n": true, " yes ": true, "n\n": false, "\n": false, "": false, "yep\n": false} {
		var w strings.Builder
		if got := confirm(strings.NewReader(answer), &w, "Go? "); got != want || w.String() != "Go? " {
			t.Errorf("%q: %v (asked %q), want %v", answer, got, w.String(), want)
		}
	}
}
