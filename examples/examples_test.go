package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

// These tests build simdevice and schedulejob with `go build` and run them
// as processes, as a user would, against a hub in this process (TLS REST
// API and MQTT on loopback). Their output is checked line by line and
// what they did is checked again through the hub.

// programs builds both programs once per test binary run (with -race when
// the tests run with it) and returns the folder that holds them.
var programs = sync.OnceValues(func() (string, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("the go command is needed to build the examples: " + err.Error())
	}
	dir, err := os.MkdirTemp("", "herd-examples-")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./simdevice", "./schedulejob")
	if out, err := exec.Command(goCmd, args...).CombinedOutput(); err != nil {
		return "", errors.New("go build: " + err.Error() + "\n" + string(out))
	}
	return dir, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if dir, err := programs(); err == nil {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// program returns the path of a built example.
func program(t *testing.T, name string) string {
	t.Helper()
	dir, err := programs()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// output collects what a process writes, safely for concurrent reads.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// lines returns the complete lines written so far.
func (o *output) lines() []string {
	s := o.String()
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(s[:i], "\n")
}

// count counts the lines equal to line.
func (o *output) count(line string) int {
	n := 0
	for _, l := range o.lines() {
		if l == line {
			n++
		}
	}
	return n
}

// proc is a running example.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *output
	done           chan struct{}
	err            error // set when done is closed
}

// command prepares an example with args and an environment that holds
// none of the caller's IOTHUB_* and HERD_* variables, only env.
func command(ctx context.Context, t *testing.T, name string, env []string, args ...string) (*exec.Cmd, *output, *output) {
	t.Helper()
	cmd := exec.CommandContext(ctx, program(t, name), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IOTHUB_") && !strings.HasPrefix(kv, "HERD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stdout, stderr := &output{}, &output{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd, stdout, stderr
}

// start starts an example that runs until it is stopped; it is killed
// when the test ends if it is still running.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd, stdout, stderr := command(ctx, t, name, env, args...)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdout: stdout, stderr: stderr, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLine waits until the process has printed line, and fails the test
// if it exits first.
func (p *proc) waitLine(t *testing.T, line string) {
	t.Helper()
	hubtest.Eventually(t, 30*time.Second, func() bool {
		if p.count(line) > 0 {
			return true
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before printing %q\nstdout:\n%s\nstderr:\n%s", p.cmd.Path, p.err, line, p.stdout, p.stderr)
		}
		return false
	}, "%s prints %q; stdout:\n%s\nstderr:\n%s", filepath.Base(p.cmd.Path), line, p.stdout, p.stderr)
}

func (p *proc) count(line string) int { return p.stdout.count(line) }

// runToEnd runs an example that ends by itself and returns its exit code.
func runToEnd(t *testing.T, name string, env []string, args ...string) (code int, stdout, stderr *output) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, stdout, stderr := command(ctx, t, name, env, args...)
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout, stderr
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode(), stdout, stderr
	}
	t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", name, err, stdout, stderr)
	return 0, nil, nil
}

// inOrder checks that want appear among got's lines in this order.
func inOrder(t *testing.T, what string, got *output, want ...string) {
	t.Helper()
	lines := got.lines()
	i := 0
	for _, l := range lines {
		if i < len(want) && l == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("%s: line %q missing or out of order; got:\n%s", what, want[i], strings.Join(lines, "\n"))
	}
}

// tutorialHub starts a hub with the tutorial's device and a second device
// that no job may touch, and writes the CA to a file.
func tutorialHub(t *testing.T) (h *hubtest.Hub, caFile string) {
	t.Helper()
	h = hubtest.Start(t)
	ctx := context.Background()
	for _, id := range []string{"myDeviceId", "otherDevice"} {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, h.CA, 0o600); err != nil {
		t.Fatal(err)
	}
	return h, caFile
}

// deviceEnv is simdevice's environment: the device connection string
// with GatewayHostName naming the hub's MQTT port, as `herd serve` prints
// it for a hub that is not on 8883.
func deviceEnv(t *testing.T, h *hubtest.Hub, id string) []string {
	t.Helper()
	cs, err := h.DeviceConnectionString(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(h.MQTTAddr)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"IOTHUB_DEVICE_CONNECTION_STRING=" + cs + ";GatewayHostName=" + net.JoinHostPort("localhost", port)}
}

// The tutorial end to end: the device answers lockDoor once and sees the
// desired update; both jobs complete with exact statistics and touch only
// the targeted device.
func TestTutorial(t *testing.T) {
	h, caFile := tutorialHub(t)
	ctx := context.Background()

	dev := start(t, "simdevice", deviceEnv(t, h, "myDeviceId"), "--ca", caFile)
	dev.waitLine(t, "Device myDeviceId connected. Waiting for the lockDoor method and desired-property updates (Ctrl-C to stop).")
	// The registry records connection states in batches (every second);
	// wait for it, as a user starting schedulejob a moment later would.
	hubtest.Eventually(t, 30*time.Second, func() bool {
		d, err := h.Service.GetDevice(ctx, "myDeviceId")
		return err == nil && d.ConnectionState == herd.Connected
	}, "the registry shows myDeviceId connected")

	// schedulejob takes its settings from the environment here, simdevice
	// from flags and the environment above.
	code, out, errOut := runToEnd(t, "schedulejob", []string{
		"IOTHUB_CONNECTION_STRING=" + h.ConnectionString, "IOTHUB_DEVICE_ID=myDeviceId",
		"HERD_CA=" + caFile, "HERD_URL=" + h.URL,
	}, "--method-job-id", "lock-1", "--twin-job-id", "twin-1")
	if code != 0 {
		t.Fatalf("schedulejob exited %d\nstdout:\n%s\nstderr:\n%s\nsimdevice:\n%s%s", code, out, errOut, dev.stdout, dev.stderr)
	}
	inOrder(t, "schedulejob", out,
		"Device myDeviceId is in the registry (enabled, Connected).",
		`Scheduled job lock-1: call lockDoor with {"lockTime":"10m"} where deviceId = 'myDeviceId'.`,
		`Scheduled job twin-1: set desired properties {"building":43,"floor":3} where deviceId = 'myDeviceId'.`,
		"Job lock-1: completed, 1 device(s): 1 succeeded, 0 failed, 0 running, 0 pending",
		`  myDeviceId: completed, lockDoor answered 200 {"Response":"lockDoor called successfully"}`,
		"Job twin-1: completed, 1 device(s): 1 succeeded, 0 failed, 0 running, 0 pending",
		"  myDeviceId: completed",
		"Both jobs completed.",
	)
	if n := out.count("  otherDevice: completed"); n != 0 {
		t.Fatalf("a job reached otherDevice:\n%s", out)
	}

	// The device: one lockDoor call with the tutorial's payload, then the
	// desired update (pushed after the twin job's commit, so waited for).
	dev.waitLine(t, `Desired properties changed (version 2): {"building":43,"floor":3}`)
	if n := dev.count("Locking Door!"); n != 1 {
		t.Fatalf("simdevice printed Locking Door! %d times:\n%s", n, dev.stdout)
	}
	inOrder(t, "simdevice", dev.stdout,
		"Locking Door!",
		`  lockDoor payload: {"lockTime":"10m"}; answering 200 {"Response":"lockDoor called successfully"}`)

	// The hub's view of the same jobs.
	exact := herd.DeviceJobStatistics{DeviceCount: 1, SucceededCount: 1}
	lock, err := h.Service.GetJob(ctx, "lock-1")
	if err != nil {
		t.Fatal(err)
	}
	m := lock.CloudToDeviceMethod
	if lock.Type != herd.JobDeviceMethod || lock.Status != herd.JobCompleted || lock.QueryCondition != "deviceId = 'myDeviceId'" ||
		m == nil || m.MethodName != "lockDoor" || string(m.Payload) != `{"lockTime":"10m"}` || m.ResponseTimeoutInSeconds != 60 ||
		lock.MaxExecutionTimeInSeconds != 300 || lock.DeviceJobStatistics == nil || *lock.DeviceJobStatistics != exact {
		b, _ := json.Marshal(lock)
		t.Fatalf("method job: %s", b)
	}
	tw, err := h.Service.GetJob(ctx, "twin-1")
	if err != nil {
		t.Fatal(err)
	}
	if tw.Type != herd.JobUpdateTwin || tw.Status != herd.JobCompleted || tw.QueryCondition != "deviceId = 'myDeviceId'" ||
		tw.DeviceJobStatistics == nil || *tw.DeviceJobStatistics != exact {
		b, _ := json.Marshal(tw)
		t.Fatalf("twin job: %s", b)
	}
	twin, err := h.Service.GetTwin(ctx, "myDeviceId")
	if err != nil {
		t.Fatal(err)
	}
	if d := twin.Properties.Desired; d["building"] != json.Number("43") || d["floor"] != json.Number("3") {
		t.Fatalf("myDeviceId desired %v", d)
	}
	other, err := h.Service.GetTwin(ctx, "otherDevice")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := other.Properties.Desired["building"]; ok {
		t.Fatalf("otherDevice's twin was updated: %v", other.Properties.Desired)
	}

	// Ctrl-C ends simdevice cleanly.
	if err := dev.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dev.done:
	case <-time.After(30 * time.Second):
		t.Fatal("simdevice did not stop on SIGINT")
	}
	if dev.err != nil || dev.count("Disconnected.") != 1 {
		t.Fatalf("simdevice after SIGINT: %v\nstdout:\n%s\nstderr:\n%s", dev.err, dev.stdout, dev.stderr)
	}
}

// Without simdevice the method job completes with the device failed
// (not online), the twin job still succeeds, and schedulejob exits 1.
func TestScheduleJobDeviceOffline(t *testing.T) {
	h, caFile := tutorialHub(t)
	code, out, errOut := runToEnd(t, "schedulejob", nil, "--connection-string", h.ConnectionString,
		"--ca", caFile, "--url", h.URL, "--device-id", "myDeviceId", "--method-job-id", "lock-2", "--twin-job-id", "twin-2")
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	inOrder(t, "schedulejob", out,
		"Device myDeviceId is in the registry (enabled, Disconnected).",
		"Job lock-2: completed, 1 device(s): 0 succeeded, 1 failed, 0 running, 0 pending",
		"  myDeviceId: failed: DeviceNotOnline Timed out waiting for device to connect.",
		"Job twin-2: completed, 1 device(s): 1 succeeded, 0 failed, 0 running, 0 pending",
		"  myDeviceId: completed",
	)
	if out.count("Both jobs completed.") != 0 || !strings.Contains(errOut.String(), "schedulejob: job lock-2: 1 of 1 devices failed") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}
}

// Refusals happen before any job exists: an unknown device, a policy
// that cannot read the registry, missing settings.
func TestScheduleJobRefusals(t *testing.T) {
	h, caFile := tutorialHub(t)
	serviceOnly, err := h.Hub.ConnectionString("service")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"unknown device", nil, []string{"--connection-string", h.ConnectionString, "--device-id", "nobody"}, 1,
			"schedulejob: device \"nobody\" is not in the hub's registry (create it with `herd device create nobody`)"},
		{"no registry read", nil, []string{"--connection-string", serviceOnly, "--device-id", "myDeviceId"}, 1,
			`schedulejob: look up device "myDeviceId": `},
		{"no device id", nil, []string{"--connection-string", h.ConnectionString}, 1,
			"schedulejob: no device: give --device-id or set IOTHUB_DEVICE_ID"},
		{"no connection string", []string{"IOTHUB_DEVICE_ID=myDeviceId"}, nil, 1,
			"schedulejob: no service connection string"},
		{"unknown flag", nil, []string{"--device", "x"}, 1, "flag provided but not defined: -device"},
		{"help", nil, []string{"-help"}, 0, "Usage: schedulejob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"HERD_CA=" + caFile, "HERD_URL=" + h.URL}, tc.env...)
			code, out, errOut := runToEnd(t, "schedulejob", env, tc.args...)
			if code != tc.code || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d (want %d)\nstdout:\n%s\nstderr (want %q):\n%s", code, tc.code, out, tc.want, errOut)
			}
		})
	}
	jobs, err := h.Service.ListJobs(context.Background(), service.JobFilter{})
	if err != nil || len(jobs) != 0 {
		t.Fatalf("jobs after refusals: %d %v", len(jobs), err)
	}
}

// simdevice exits 1 at once, without retrying, when the hub refuses its
// key, and explains a missing connection string.
func TestSimDeviceRefusals(t *testing.T) {
	h, caFile := tutorialHub(t)
	env := deviceEnv(t, h, "myDeviceId")
	bad := env[0][:strings.Index(env[0], "SharedAccessKey=")] + "SharedAccessKey=" + "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgd3Jvbmc=" +
		env[0][strings.Index(env[0], ";GatewayHostName="):]
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"wrong key", []string{bad}, "simdevice: "},
		{"no connection string", nil, "simdevice: no device connection string"},
		{"not a connection string", []string{"IOTHUB_DEVICE_CONNECTION_STRING=hello"}, "simdevice: connection string part \"hello\" is not Key=Value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runToEnd(t, "simdevice", tc.env, "--ca", caFile)
			if code != 1 || !strings.Contains(errOut.String(), tc.want) || out.count("Disconnected.") != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr (want %q):\n%s", code, out, tc.want, errOut)
			}
		})
	}
}
