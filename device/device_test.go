package device_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

func newDevice(t *testing.T, h *hubtest.Hub, id string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
		t.Fatal(err)
	}
	cs, err := h.DeviceConnectionString(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func connect(t *testing.T, h *hubtest.Hub, cs string, opts ...device.Option) *device.Client {
	t.Helper()
	opts = append([]device.Option{device.WithCA(h.CA), device.WithAddress(h.MQTTAddr)}, opts...)
	c, err := device.New(cs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func echo(ctx context.Context, payload json.RawMessage) (int, any) {
	return 200, map[string]json.RawMessage{"echo": payload}
}

func TestEndToEndTLS(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	c := connect(t, h, newDevice(t, h, "dev1"))
	c.OnMethod("echo", echo)
	desired := make(chan map[string]any, 10)
	c.OnDesiredChange(func(patch map[string]any, version int64) {
		patch["$v"] = version
		desired <- patch
	})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	res, err := h.Service.InvokeMethod(ctx, "dev1", herd.MethodRequest{MethodName: "echo", Payload: json.RawMessage(`{"a":1}`)})
	if err != nil || res.Status != 200 || string(res.Payload) != `{"echo":{"a":1}}` {
		t.Fatalf("invoke: %+v %v", res, err)
	}
	// A method without a handler is not answered: 504 after the timeout
	// (not waited for here); an unknown device is 404.
	if _, err := h.Service.InvokeMethod(ctx, "nobody", herd.MethodRequest{MethodName: "echo"}); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Fatalf("unknown device: %v", err)
	}

	v, err := c.ReportProperties(ctx, map[string]any{"firmware": "1.2.3", "battery": 87})
	if err != nil || v != 2 {
		t.Fatalf("report: %d %v", v, err)
	}
	tw, err := h.Service.GetTwin(ctx, "dev1")
	if err != nil || tw.Properties.Reported["firmware"] != "1.2.3" {
		t.Fatalf("service twin %+v %v", tw, err)
	}
	if _, err := h.Service.UpdateTwin(ctx, "dev1", herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"interval": 10}}}, "*"); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-desired:
		if p["interval"] != json.Number("10") || p["$v"] != int64(2) {
			t.Fatalf("desired patch %v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no desired change")
	}
	twin, err := c.Twin(ctx)
	if err != nil || twin.DesiredVersion != 2 || twin.ReportedVersion != 2 || twin.Desired["interval"] != json.Number("10") {
		t.Fatalf("twin %+v %v", twin, err)
	}
	// The hub's refusal is a *herd.Error, as in the service SDK, with the
	// status of the twin response.
	_, err = c.ReportProperties(ctx, map[string]any{"bad key": 1})
	var he *herd.Error
	if !herd.IsCode(err, herd.ErrArgumentInvalid) || !errors.As(err, &he) || he.Status != 400 || he.Message == "" {
		t.Fatalf("invalid reported key: %#v", err)
	}

	events := make(chan *herd.Event, 1)
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go h.Service.MonitorEvents(mctx, "dev1", service.EventHandler{Event: func(e *herd.Event) error { events <- e; return nil }})
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Events.Subscribers() == 1 }, "monitor")
	if err := c.SendEvent(ctx, []byte(`{"t":21.5}`), map[string]string{"$.ct": "application/json", "$.ce": "utf-8", "alert": "a b&c/d"}); err != nil {
		t.Fatal(err)
	}
	e := <-events
	if string(e.Body) != `{"t":21.5}` || e.SystemProperties["$.ct"] != "application/json" || e.Properties["alert"] != "a b&c/d" {
		t.Fatalf("event %+v", e)
	}
}

func TestWebSocket(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	c, err := device.New(newDevice(t, h, "ws1"), device.WithCA(h.CA), device.WithTransport(device.WebSocket),
		device.WithAddress("wss://"+strings.Replace(h.HTTPSAddr().String(), "127.0.0.1", "localhost", 1)))
	if err != nil {
		t.Fatal(err)
	}
	c.OnMethod("echo", echo)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := h.Service.InvokeMethod(ctx, "ws1", herd.MethodRequest{MethodName: "echo", Payload: json.RawMessage(`"hi"`)})
	if err != nil || string(res.Payload) != `{"echo":"hi"}` {
		t.Fatalf("invoke over WebSocket: %+v %v", res, err)
	}
	if _, err := c.Twin(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConnectRefused(t *testing.T) {
	h := hubtest.Start(t)
	cs := newDevice(t, h, "dev1")
	bad := strings.Replace(cs, "SharedAccessKey=", "SharedAccessKey=AAAA", 1)
	c := connect(t, h, bad)
	if err := c.Connect(context.Background()); !herd.IsCode(err, herd.ErrUnauthorized) {
		t.Fatalf("connect with a wrong key: %v", err)
	}
	c.Close()
}

// The client renews its token by reconnecting (no SUBSCRIBE: the hub keeps
// the session) and methods keep working.
func TestTokenRenewal(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	c := connect(t, h, newDevice(t, h, "dev1"), device.WithTokenRenewal(time.Hour, time.Hour-time.Second))
	c.OnMethod("echo", echo)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	accepted := func() float64 {
		mfs, _ := h.Metrics.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "herd_mqtt_connects_total" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == "accepted" {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	hubtest.Eventually(t, 20*time.Second, func() bool { return accepted() >= 4 }, "token not renewed")
	// A request written to a connection the device is just closing is
	// lost (at most once); that shows as a GatewayTimeout and is retried.
	for ok, tries := 0, 0; ok < 3; tries++ {
		res, err := h.Service.InvokeMethod(ctx, "dev1", herd.MethodRequest{MethodName: "echo", ResponseTimeoutInSeconds: 5, ConnectTimeoutInSeconds: 10})
		switch {
		case err == nil && res.Status == 200:
			ok++
		case herd.IsCode(err, herd.ErrGatewayTimeout) && tries < 5:
		default:
			t.Fatalf("invoke after renewals: %+v %v", res, err)
		}
	}
}

// A dropped connection is re-established with back-off.
func TestReconnect(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	cs := newDevice(t, h, "dev1")
	c := connect(t, h, cs, device.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	c.OnMethod("echo", echo)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Disabling the device drops its connection, and reconnecting fails
	// until it is enabled again.
	held := h.Bus.Lookup("dev1")
	setStatus := func(st herd.DeviceStatus) {
		d, err := h.Service.GetDevice(ctx, "dev1")
		if err != nil {
			t.Fatal(err)
		}
		d.Status = st
		if _, err := h.Service.UpdateDevice(ctx, *d, "*"); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(herd.DeviceDisabled)
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Lookup("dev1") == nil }, "still connected")
	setStatus(herd.DeviceEnabled)
	hubtest.Eventually(t, 20*time.Second, func() bool {
		c := h.Bus.Lookup("dev1")
		return c != nil && c != held
	}, "the client did not reconnect")
	res, err := h.Service.InvokeMethod(ctx, "dev1", herd.MethodRequest{MethodName: "echo", ConnectTimeoutInSeconds: 30})
	if err != nil || res.Status != 200 {
		t.Fatalf("invoke after reconnect: %+v %v", res, err)
	}
}
