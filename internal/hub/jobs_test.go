package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

// calls counts method invocations per device.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) handler(id string) device.MethodHandler {
	return func(_ context.Context, payload json.RawMessage) (int, any) {
		c.mu.Lock()
		c.n[id]++
		c.mu.Unlock()
		return 201, map[string]any{"device": id, "got": payload}
	}
}

func (c *calls) of(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// TestMethodJobThroughGateway runs a method job over real MQTT devices:
// online devices answer, an offline device is waited for and invoked the
// moment it connects, another never connects and fails with
// DeviceNotOnline when its connect timeout (on the hub's clock) passes.
func TestMethodJobThroughGateway(t *testing.T) {
	fake := clock.NewFake(time.Now())
	h := hubtest.Start(t, hubtest.WithFakeClock(fake))
	ctx := context.Background()
	cnt := &calls{n: map[string]int{}}
	devs := map[string]*device.Client{}
	for _, id := range []string{"on1", "on2", "late", "off"} {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id, Status: herd.DeviceEnabled}); err != nil {
			t.Fatal(err)
		}
		cs, err := h.DeviceConnectionString(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		c, err := device.New(cs, device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
		if err != nil {
			t.Fatal(err)
		}
		c.OnMethod("reboot", cnt.handler(id))
		devs[id] = c
		t.Cleanup(func() { c.Close() })
	}
	for _, id := range []string{"on1", "on2"} {
		if err := devs[id].Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 2 }, "two devices connected")

	j, err := h.Service.ScheduleDeviceMethod(ctx, "reboot-all", "*", herd.MethodRequest{
		MethodName: "reboot", Payload: json.RawMessage(`{"delay":5}`), ResponseTimeoutInSeconds: 30, ConnectTimeoutInSeconds: 120,
	}, service.JobOptions{})
	if err != nil || j.Status != herd.JobQueued {
		t.Fatalf("schedule: %+v %v", j, err)
	}
	get := func() herd.DeviceJobStatistics {
		j, err := h.Service.GetJob(ctx, "reboot-all")
		if err != nil {
			t.Fatal(err)
		}
		return *j.DeviceJobStatistics
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { st := get(); return st.SucceededCount == 2 && st.PendingCount == 2 },
		"the online devices answered, the offline ones are waited for")
	if err := devs["late"].Connect(ctx); err != nil { // connects mid-job
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return get().SucceededCount == 3 }, "late invoked once it connected")
	fake.Advance(121 * time.Second) // "off" never connects
	j, err = h.Service.WaitJob(ctx, "reboot-all", nil)
	if err != nil || j.Status != herd.JobCompleted ||
		*j.DeviceJobStatistics != (herd.DeviceJobStatistics{DeviceCount: 4, SucceededCount: 3, FailedCount: 1}) {
		t.Fatalf("job: %+v %+v %v", j, j.DeviceJobStatistics, err)
	}
	for id, want := range map[string]int{"on1": 1, "on2": 1, "late": 1, "off": 0} {
		if got := cnt.of(id); got != want {
			t.Errorf("%s invoked %d times, want %d", id, got, want)
		}
	}
	records := map[string]*herd.DeviceJob{}
	for page, err := range h.Service.Query(ctx, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'reboot-all'") {
		if err != nil {
			t.Fatal(err)
		}
		djs, _ := page.DeviceJobs()
		for _, d := range djs {
			records[d.DeviceID] = d
		}
	}
	if d := records["late"]; d == nil || d.Status != herd.DeviceJobCompleted || d.Outcome == nil ||
		d.Outcome.DeviceMethodResponse.Status != 201 || string(d.Outcome.DeviceMethodResponse.Payload) != `{"device":"late","got":{"delay":5}}` {
		t.Errorf("late record: %+v", d)
	}
	if d := records["off"]; d == nil || d.Status != herd.DeviceJobFailed || d.Error == nil || d.Error.Code != "DeviceNotOnline" ||
		d.Error.Description != "Timed out waiting for device to connect." {
		t.Errorf("off record: %+v", d)
	}

	// connectTimeoutInSeconds 0 (what the Node SDK sends): offline devices
	// fail at once, as in Azure.
	if _, err := h.Service.ScheduleDeviceMethod(ctx, "now-only", "deviceId IN ['on1', 'off']", herd.MethodRequest{MethodName: "reboot"}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	j, err = h.Service.WaitJob(ctx, "now-only", nil)
	if err != nil || *j.DeviceJobStatistics != (herd.DeviceJobStatistics{DeviceCount: 2, SucceededCount: 1, FailedCount: 1}) {
		t.Fatalf("now-only: %+v %v", j.DeviceJobStatistics, err)
	}
	if cnt.of("on1") != 2 {
		t.Errorf("on1 invoked %d times over two jobs", cnt.of("on1"))
	}
}

// TestTwinJobNotifiesConnectedDevices checks that a twin job's desired
// change reaches a connected device as a desired-properties notification.
func TestTwinJobNotifiesConnectedDevices(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	got := make(chan string, 4)
	for i := range 2 {
		id := fmt.Sprintf("t%d", i)
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
		cs, _ := h.DeviceConnectionString(ctx, id)
		c, err := device.New(cs, device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
		if err != nil {
			t.Fatal(err)
		}
		c.OnDesiredChange(func(patch map[string]any, version int64) {
			got <- fmt.Sprintf("%s v%d fw=%v", id, version, patch["fw"])
		})
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "fw", "*", herd.TwinPatch{Properties: &herd.PatchProperties{
		Desired: map[string]any{"fw": "2.0"}}}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case s := <-got:
			seen[s] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("notifications: %v", seen)
		}
	}
	if !seen["t0 v2 fw=2.0"] || !seen["t1 v2 fw=2.0"] {
		t.Errorf("notifications: %v", seen)
	}
}

// TestContinuousJobsFollowTheHub: continuous jobs (herd.continuous) over
// a whole hub pick up devices as the service and the devices change them —
// a device created through the registry, one tagged through the twin API,
// and one whose device reports the property a condition reads — each once.
func TestContinuousJobsFollowTheHub(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	cnt := &calls{n: map[string]int{}}
	connect := func(id string) *device.Client {
		t.Helper()
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id, Status: herd.DeviceEnabled}); err != nil {
			t.Fatal(err)
		}
		cs, err := h.DeviceConnectionString(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		c, err := device.New(cs, device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
		if err != nil {
			t.Fatal(err)
		}
		c.OnMethod("enroll", cnt.handler(id))
		t.Cleanup(func() { c.Close() })
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	stats := func(id string) herd.DeviceJobStatistics {
		j, err := h.Service.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.EndTime != nil {
			t.Fatalf("job %s ended: %s %q", id, j.Status, j.FailureReason)
		}
		return *j.DeviceJobStatistics
	}
	connect("m1")
	cont := service.JobOptions{Herd: &herd.JobOptions{Continuous: true}}
	req := herd.MethodRequest{MethodName: "enroll", ResponseTimeoutInSeconds: 30, ConnectTimeoutInSeconds: 60}
	if _, err := h.Service.ScheduleDeviceMethod(ctx, "by-tag", "tags.fleet = 'new'", req, cont); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.ScheduleDeviceMethod(ctx, "by-report", "properties.reported.mode = 'ready'", req, cont); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "by-id", "STARTSWITH(deviceId, 'm')",
		herd.TwinPatch{ETag: "*", Properties: &herd.PatchProperties{Desired: map[string]any{"welcome": true}}}, cont); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return stats("by-id").SucceededCount == 1 }, "m1 welcomed")
	// Created through the registry: the twin job patches it.
	m2 := connect("m2")
	hubtest.Eventually(t, 10*time.Second, func() bool { return stats("by-id").SucceededCount == 2 }, "m2 welcomed")
	// Tagged through the twin API: the method job calls it.
	if _, err := h.Service.UpdateTwin(ctx, "m1", herd.TwinPatch{Tags: map[string]any{"fleet": "new"}}, "*"); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return stats("by-tag").SucceededCount == 1 }, "m1 called by tag")
	// Reported by the device itself: the other method job calls it.
	if _, err := m2.ReportProperties(ctx, map[string]any{"mode": "ready"}); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return stats("by-report").SucceededCount == 1 }, "m2 called by its report")
	// Reporting again does not call it again.
	if _, err := m2.ReportProperties(ctx, map[string]any{"mode": "ready", "n": 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.UpdateTwin(ctx, "m1", herd.TwinPatch{Tags: map[string]any{"fleet": "new", "n": 2}}, "*"); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		return stats("by-id").SucceededCount == 2 && stats("by-tag").DeviceCount == 1 && stats("by-report").DeviceCount == 1
	}, "no device targeted twice")
	if cnt.of("m1") != 1 || cnt.of("m2") != 1 {
		t.Errorf("calls: m1 %d, m2 %d; want one each", cnt.of("m1"), cnt.of("m2"))
	}
}
