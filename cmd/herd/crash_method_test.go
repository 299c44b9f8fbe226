package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/twin"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// freeAddr returns a loopback address with a port that was free a moment
// ago (the hub must come back on the same ports after a kill).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestKillDuringMethodJob kills a real `herd serve` (SIGKILL) while a
// method job has calls in flight to devices connected over MQTT, restarts
// it, and checks the at-most-once contract: no device runs the method
// twice, the calls that were in flight fail with MethodInterrupted, and
// every other device is invoked after the restart (the devices reconnect
// on their own and are waited for).
func TestKillDuringMethodJob(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const devices, inFlight = 40, 4
	dir := t.TempDir()
	ctx := context.Background()
	db, err := store.Open(ctx, hubtest.StoreFor(t, dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	var ops []registry.Op
	for i := range devices {
		id := fmt.Sprintf("dev-%02d", i)
		keys[id] = auth.NewKey()
		ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: twin.NewDoc(time.Now()), Device: &herd.Device{
			DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled,
			Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: keys[id], SecondaryKey: auth.NewKey()}}}})
	}
	if _, err := db.ApplyDevices(ctx, ops); err != nil {
		t.Fatal(err)
	}
	db.Close()

	bin := buildHerd(t)
	args := []string{"--https-addr", freeAddr(t), "--mqtt-addr", freeAddr(t), "--job-max-in-flight", fmt.Sprint(inFlight)}
	mqttAddr := args[3]
	serve := serveProcess(t, bin, dir, args...)
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	invoked := map[string]int{}
	for id, key := range keys {
		cs := sas.ConnectionString{HostName: "localhost", DeviceID: id, SharedAccessKey: key}.String()
		c, err := device.New(cs, device.WithCA(ca), device.WithAddress(mqttAddr))
		if err != nil {
			t.Fatal(err)
		}
		c.OnMethod("upgrade", func(ctx context.Context, _ json.RawMessage) (int, any) {
			mu.Lock()
			invoked[id]++
			mu.Unlock()
			time.Sleep(100 * time.Millisecond) // long enough to be in flight when the hub dies
			return 200, map[string]string{"device": id}
		})
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	c := localClient(t, dir)
	if _, err := c.ScheduleDeviceMethod(ctx, "upgrade", "*", herd.MethodRequest{MethodName: "upgrade",
		ResponseTimeoutInSeconds: 30, ConnectTimeoutInSeconds: 120}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		j, err := c.GetJob(ctx, "upgrade")
		if err != nil {
			t.Fatal(err)
		}
		if j.EndTime != nil {
			t.Fatal("the job ended before the hub could be killed")
		}
		if st := j.DeviceJobStatistics; st.SucceededCount >= inFlight && st.RunningCount > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	serve.Process.Signal(syscall.SIGKILL)
	serve.Wait()
	serveProcess(t, bin, dir, args...)
	c = localClient(t, dir)
	j, err := c.WaitJob(ctx, "upgrade", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := *j.DeviceJobStatistics
	if j.Status != herd.JobCompleted || st.DeviceCount != devices || st.SucceededCount+st.FailedCount != devices ||
		st.FailedCount == 0 || st.FailedCount > inFlight {
		t.Fatalf("job after the restart: %s %+v", j.Status, st)
	}
	mu.Lock()
	defer mu.Unlock()
	for page, err := range c.Query(ctx, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'upgrade'") {
		if err != nil {
			t.Fatal(err)
		}
		djs, _ := page.DeviceJobs()
		for _, d := range djs {
			n := invoked[d.DeviceID]
			switch d.Status {
			case herd.DeviceJobCompleted:
				if n != 1 {
					t.Errorf("%s completed but ran the method %d times", d.DeviceID, n)
				}
			case herd.DeviceJobFailed:
				if d.Error == nil || d.Error.Code != "MethodInterrupted" || n > 1 {
					t.Errorf("%s failed (%+v) and ran the method %d times", d.DeviceID, d.Error, n)
				}
			default:
				t.Errorf("%s: %s", d.DeviceID, d.Status)
			}
		}
	}
	t.Logf("%d devices: %d succeeded, %d in flight at the kill (MethodInterrupted)", devices, st.SucceededCount, st.FailedCount)
}
