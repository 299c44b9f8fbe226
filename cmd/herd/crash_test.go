package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/twin"
	"github.com/herd-iot/herd/service"
)

// buildHerd builds the herd binary from this tree.
func buildHerd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// served is a `herd serve` child process and what it wrote to stdout
// and stderr.
type served struct {
	*exec.Cmd
	stdout, stderr *syncBuffer
}

// serveProcess runs `herd serve` as a child process until it is ready;
// the test's end kills it. Later args override earlier ones.
func serveProcess(t *testing.T, bin, dir string, args ...string) served {
	t.Helper()
	base := []string{"serve", "--data", dir, "--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--log-level", "warn"}
	if spec := hubtest.StoreFor(t, dir); spec != "" {
		base = append(base, "--store", spec) // HERD_TEST_STORE=postgres
	}
	cmd := exec.Command(bin, append(base, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan bool, 1)
	banner := &syncBuffer{}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			banner.Write([]byte(sc.Text() + "\n"))
			if strings.Contains(sc.Text(), "Herd is ready") {
				ready <- true
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("serve exited before it was ready: %s", stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve not ready")
	}
	return served{cmd, banner, stderr}
}

func localClient(t *testing.T, dir string) *service.Client {
	t.Helper()
	l, err := localHub(context.Background(), hubtest.StoreFor(t, dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := service.New(l.connectionString, service.WithCAFile(filepath.Join(dir, "ca.pem")), service.WithEndpoint(l.url))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKillDuringTwinJob kills a real `herd serve` (SIGKILL) in the middle
// of twin-update jobs, restarts it, and checks that every job resumes and
// completes and that no twin got any patch twice: each device's desired
// $version is exactly 1 + the number of jobs.
func TestKillDuringTwinJob(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const devices = 10000
	dir := t.TempDir()
	ctx := context.Background()
	db, err := store.Open(ctx, hubtest.StoreFor(t, dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	for start := 0; start < devices; start += 5000 {
		var ops []registry.Op
		for i := start; i < start+5000; i++ {
			id := fmt.Sprintf("dev-%05d", i)
			ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: twin.NewDoc(time.Now()), Device: &herd.Device{
				DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled,
				Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()}}}})
		}
		if _, err := db.ApplyDevices(ctx, ops); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	bin := buildHerd(t)
	// Small batches: many transactions, so that the kill lands mid-job.
	args := []string{"--job-twin-batch", "20"}
	serve := serveProcess(t, bin, dir, args...)
	c := localClient(t, dir)
	jobs, kills := 0, 0
	for kills < 2 && jobs < 10 {
		id := fmt.Sprintf("job-%d", jobs)
		if _, err := c.ScheduleTwinUpdate(ctx, id, "*", herd.TwinPatch{Properties: &herd.PatchProperties{
			Desired: map[string]any{"job": jobs}}}, service.JobOptions{}); err != nil {
			t.Fatal(err)
		}
		jobs++
		// Wait until the job is part done, then kill the hub.
		killed := false
		for {
			j, err := c.GetJob(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			st := j.DeviceJobStatistics
			if st.DeviceCount != st.SucceededCount+st.FailedCount+st.RunningCount+st.PendingCount {
				t.Fatalf("statistics do not add up: %+v", st)
			}
			if j.EndTime != nil {
				break // finished before we could kill it: try another
			}
			if st.SucceededCount > 0 {
				serve.Process.Signal(syscall.SIGKILL)
				serve.Wait()
				killed = true
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		if killed {
			kills++
			serve = serveProcess(t, bin, dir, args...)
			c = localClient(t, dir)
			// Let the resumed job finish before the next one starts: jobs
			// that run at the same time over the same twins have no
			// defined order, and the test checks the last value below.
			if _, err := c.WaitJob(ctx, id, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if kills == 0 {
		t.Fatal("no job was still running when polled; the test proved nothing")
	}
	for i := range jobs {
		j, err := c.WaitJob(ctx, fmt.Sprintf("job-%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != herd.JobCompleted || *j.DeviceJobStatistics != (herd.DeviceJobStatistics{DeviceCount: devices, SucceededCount: devices}) {
			t.Errorf("job-%d: %s %+v", i, j.Status, j.DeviceJobStatistics)
		}
	}
	serve.Process.Signal(syscall.SIGTERM)
	serve.Wait()

	// Read the twins straight from the store, as the hub left them.
	st, err := store.Open(ctx, hubtest.StoreFor(t, dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	count := func(q string) map[string]any {
		t.Helper()
		res, err := query.NewService(st).Run(ctx, q, 1, "")
		if err != nil || len(res.Items) != 1 {
			t.Fatalf("%s: %v %v", q, err, res)
		}
		return res.Items[0].(map[string]any)
	}
	if r := count(fmt.Sprintf("SELECT COUNT() AS n, MIN(properties.desired.$version) AS lo, MAX(properties.desired.$version) AS hi FROM devices WHERE properties.desired.$version != %d", 1+jobs)); r["n"] != float64(0) && r["n"] != int64(0) {
		t.Errorf("%v of %d twins have a desired $version other than %d (range %v..%v): a patch was lost or applied twice", r["n"], devices, 1+jobs, r["lo"], r["hi"])
	}
	if r := count(fmt.Sprintf("SELECT COUNT() AS n FROM devices WHERE NOT IS_DEFINED(properties.desired.job) OR properties.desired.job != %d", jobs-1)); r["n"] != float64(0) && r["n"] != int64(0) {
		t.Errorf("%v twins do not hold the last job's value", r["n"])
	}
	t.Logf("%d jobs over %d devices, hub killed %d times", jobs, devices, kills)
}
