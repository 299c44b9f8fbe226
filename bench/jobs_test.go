package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/sim"
	"github.com/herd-iot/herd/internal/store/sqlite"
	"github.com/herd-iot/herd/internal/twin"
	"github.com/herd-iot/herd/service"
)

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// child is a `herd serve` child process.
type child struct {
	cmd    *exec.Cmd
	client *service.Client
	mqtt   string
}

// startHub registers n devices (with known keys) in a new data folder and
// starts `herd serve` on it with a plain MQTT listener.
func startHub(b *testing.B, n int, extra ...string) (*child, []sim.Identity) {
	b.Helper()
	dir := b.TempDir()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "herd.db"))
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]sim.Identity, n)
	for start := 0; start < n; start += 5000 {
		var ops []registry.Op
		for i := start; i < min(start+5000, n); i++ {
			ids[i] = sim.Identity{ID: fmt.Sprintf("sim-%06d", i), Key: auth.NewKey()}
			ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: ids[i].ID, Twin: twin.NewDoc(time.Now()), Device: &herd.Device{
				DeviceID: ids[i].ID, GenerationID: "1", Status: herd.DeviceEnabled,
				Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: ids[i].Key, SecondaryKey: auth.NewKey()}}}})
		}
		if _, err := db.ApplyDevices(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
	db.Close()
	bin := filepath.Join(b.TempDir(), "herd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/herd").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	https, mqtt := freeAddr(b), freeAddr(b)
	cmd := exec.Command(bin, append([]string{"serve", "--data", dir, "--https-addr", https, "--mqtt-plain-addr", mqtt,
		"--mqtt-addr", "", "--log-level", "warn"}, extra...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var cs string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "HostName=") {
			cs = line
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if cs == "" {
		b.Fatal("serve did not print its connection string")
	}
	c, err := service.New(cs, service.WithCAFile(filepath.Join(dir, "ca.pem")), service.WithEndpoint("https://"+https))
	if err != nil {
		b.Fatal(err)
	}
	return &child{cmd: cmd, client: c, mqtt: mqtt}, ids
}

// BenchmarkMethodJob10k: a method job over 10,000 simulated devices
// connected over (plain) MQTT to a `herd serve` child process, every
// outcome persisted; reports devices/s from the job's start to its end
// (the hub's own timestamps).
func BenchmarkMethodJob10k(b *testing.B) {
	const n = 10_000
	h, ids := startHub(b, n)
	fleet := sim.New(sim.Config{Host: "localhost", Addr: h.mqtt, Devices: ids, Concurrency: 512})
	ctx := context.Background()
	if err := fleet.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer fleet.Disconnect()
	if st := fleet.Stats(); st.Connected != n {
		b.Fatalf("%d of %d devices connected", st.Connected, n)
	}
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("m%d", i)
		if _, err := h.client.ScheduleDeviceMethod(ctx, id, "*", herd.MethodRequest{MethodName: "reboot"}, service.JobOptions{}); err != nil {
			b.Fatal(err)
		}
		var j *herd.Job
		for {
			var err error
			if j, err = h.client.GetJob(ctx, id); err != nil {
				b.Fatal(err)
			}
			if j.EndTime != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if st := j.DeviceJobStatistics; st.SucceededCount != n {
			b.Fatalf("job %s: %s %+v", id, j.Status, st)
		}
		total += j.EndTime.Sub(j.StartTime.Time)
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "devices/s")
	b.ReportMetric(total.Seconds()/float64(b.N), "s/job")
}
