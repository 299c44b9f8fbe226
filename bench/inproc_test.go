package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/sim"
	"github.com/herd-iot/herd/internal/twin"
	"github.com/herd-iot/herd/service"
)

// BenchmarkMethodJobInProcess is BenchmarkMethodJob10k with the hub in the
// benchmark process (8,000 devices: both ends of every connection count
// against the process's open-file limit), for CPU profiles of hub and
// devices together.
func BenchmarkMethodJobInProcess(b *testing.B) {
	const n = 8_000
	h := hubtest.Start(b, hubtest.WithConfig(func(c *hub.Config) { c.MQTTAddr = "" }))
	ctx := context.Background()
	ids := make([]sim.Identity, n)
	var ops []registry.Op
	for i := range n {
		ids[i] = sim.Identity{ID: fmt.Sprintf("sim-%06d", i), Key: auth.NewKey()}
		ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: ids[i].ID, Twin: twin.NewDoc(time.Now()), Device: &herd.Device{
			DeviceID: ids[i].ID, GenerationID: "1", Status: herd.DeviceEnabled,
			Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: ids[i].Key, SecondaryKey: auth.NewKey()}}}})
	}
	if _, err := h.Store.ApplyDevices(ctx, ops); err != nil {
		b.Fatal(err)
	}
	fleet := sim.New(sim.Config{Host: "localhost", Addr: h.MQTTPlainAddr, Devices: ids, Concurrency: 512})
	if err := fleet.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer fleet.Disconnect()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("m%d", i)
		if _, err := h.Service.ScheduleDeviceMethod(ctx, id, "*", herd.MethodRequest{MethodName: "reboot"}, service.JobOptions{}); err != nil {
			b.Fatal(err)
		}
		j, err := h.Service.WaitJob(ctx, id, nil)
		if err != nil || j.DeviceJobStatistics.SucceededCount != n {
			b.Fatalf("%+v %v", j, err)
		}
		b.ReportMetric(float64(n)/j.EndTime.Sub(j.StartTime.Time).Seconds(), "devices/s")
	}
}
