package sim_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/sim"
)

func register(t *testing.T, h *hubtest.Hub, n int) []sim.Identity {
	t.Helper()
	ctx := context.Background()
	var ids []sim.Identity
	for i := 0; i < n; i++ {
		d, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: fmt.Sprintf("sim-%03d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sim.Identity{ID: d.DeviceID, Key: d.Authentication.SymmetricKey.PrimaryKey})
	}
	return ids
}

func tlsConfig(h *hubtest.Hub) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// TestTransports connects a fleet over every transport and checks methods,
// desired properties reported back, and telemetry end to end.
func TestTransports(t *testing.T) {
	h := hubtest.Start(t)
	ids := register(t, h, 20)
	for _, tc := range []struct {
		name string
		dial sim.Dialer
	}{
		{"plain", sim.TCP(h.MQTTPlainAddr, nil)},
		{"tls", sim.TCP(h.MQTTAddr, tlsConfig(h))},
		{"websocket", sim.WebSocket("wss://"+h.HTTPSAddr().String()+"/$iothub/websocket", tlsConfig(h))},
		{"pipe", sim.Pipe(h.Gateway.ServeConn)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := sim.New(sim.Config{Host: h.Hostname(), Dial: tc.dial, Devices: ids,
				Telemetry: 20 * time.Millisecond, ReportDesired: true, MethodStatus: 201})
			ctx := context.Background()
			if err := f.Connect(ctx); err != nil {
				t.Fatal(err)
			}
			defer f.Disconnect()
			hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == int64(len(ids)) }, "not all connected")
			for _, id := range ids[:5] {
				res, err := h.Methods.Invoke(ctx, id.ID, herd.MethodRequest{MethodName: "lockDoor", Payload: json.RawMessage(`{"n":1}`), ResponseTimeoutInSeconds: 30})
				if err != nil || res.Status != 201 || string(res.Payload) != `{"n":1}` {
					t.Fatalf("%s: %+v %v", id.ID, res, err)
				}
			}
			rate := fmt.Sprintf("%s-%d", tc.name, time.Now().UnixNano())
			if _, err := h.Service.UpdateTwin(ctx, ids[0].ID, herd.TwinPatch{Properties: &herd.PatchProperties{
				Desired: map[string]any{"rate": rate, "floor": 3}}}, "*"); err != nil {
				t.Fatal(err)
			}
			hubtest.Eventually(t, 10*time.Second, func() bool {
				tw, err := h.Service.GetTwin(ctx, ids[0].ID)
				return err == nil && tw.Properties.Reported["rate"] == rate && fmt.Sprint(tw.Properties.Reported["floor"]) == "3"
			}, "desired not applied and reported")
			hubtest.Eventually(t, 10*time.Second, func() bool { return f.Stats().TelemetrySent >= 20 }, "no telemetry")
			f.Disconnect()
			hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "still connected")
			s := f.Stats()
			if s.Connected != 0 || s.MethodsAnswered < 5 || s.DesiredApplied < 1 || s.ReportedSent < 1 || s.Errors != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestMethodFailuresAndDrops: with failure rate 1 every call is answered
// 500; with drop rate 1 none is answered and the hub times out; latency
// delays the answer.
func TestMethodFailuresAndDrops(t *testing.T) {
	h := hubtest.Start(t)
	ids := register(t, h, 3)
	ctx := context.Background()
	cfg := sim.Config{Host: h.Hostname(), Dial: sim.Pipe(h.Gateway.ServeConn)}
	failing, dropping, slow := cfg, cfg, cfg
	failing.Devices, failing.MethodFailureRate = ids[0:1], 1
	dropping.Devices, dropping.MethodDropRate = ids[1:2], 1
	slow.Devices, slow.MethodLatency = ids[2:3], 300*time.Millisecond
	var fleets []*sim.Fleet
	for _, c := range []sim.Config{failing, dropping, slow} {
		f := sim.New(c)
		if err := f.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		defer f.Disconnect()
		fleets = append(fleets, f)
	}
	req := herd.MethodRequest{MethodName: "lockDoor", Payload: json.RawMessage(`{"lockTime":"10m"}`), ResponseTimeoutInSeconds: 5}
	res, err := h.Service.InvokeMethod(ctx, ids[0].ID, req)
	if err != nil || res.Status != 500 || !strings.Contains(string(res.Payload), "simulated failure") {
		t.Fatalf("failing device: %+v %v", res, err)
	}
	start := time.Now()
	res, err = h.Service.InvokeMethod(ctx, ids[2].ID, req)
	if err != nil || res.Status != 200 || string(res.Payload) != `{"lockTime":"10m"}` {
		t.Fatalf("slow device: %+v %v", res, err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("slow device answered in %s, before its latency", took)
	}
	if _, err := h.Service.InvokeMethod(ctx, ids[1].ID, req); !herd.IsCode(err, herd.ErrGatewayTimeout) {
		t.Fatalf("dropping device: got %v, want GatewayTimeout", err)
	}
	if s := fleets[0].Stats(); s.MethodsAnswered != 1 || s.MethodsFailed != 1 {
		t.Fatalf("failing fleet %+v", s)
	}
	if s := fleets[1].Stats(); s.MethodsAnswered != 0 || s.MethodsDropped != 1 {
		t.Fatalf("dropping fleet %+v", s)
	}
}

// TestReconnect: a device the hub disconnects (disabled) keeps trying and
// is back once it is enabled again.
func TestReconnect(t *testing.T) {
	h := hubtest.Start(t)
	ids := register(t, h, 2)
	ctx := context.Background()
	f := sim.New(sim.Config{Host: h.Hostname(), Dial: sim.TCP(h.MQTTPlainAddr, nil), Devices: ids, Reconnect: true})
	if err := f.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer f.Disconnect()
	d, err := h.Service.GetDevice(ctx, ids[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	d.Status = herd.DeviceDisabled
	if d, err = h.Service.UpdateDevice(ctx, *d, "*"); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return f.Stats().Disconnects == 1 }, "not disconnected: %+v", f.Stats())
	hubtest.Eventually(t, 10*time.Second, func() bool { return f.Stats().ConnectFailures >= 1 }, "no refused reconnect: %+v", f.Stats())
	d.Status = herd.DeviceEnabled
	if _, err = h.Service.UpdateDevice(ctx, *d, "*"); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 30*time.Second, func() bool { s := f.Stats(); return s.Connected == 2 && s.Reconnects == 1 },
		"not reconnected: %+v", f.Stats())
	if h.Bus.Connected() != 2 {
		t.Fatalf("hub sees %d devices", h.Bus.Connected())
	}
}

// TestConnectRate: 10 devices at 20 connects/s take about half a second.
func TestConnectRate(t *testing.T) {
	h := hubtest.Start(t)
	ids := register(t, h, 10)
	f := sim.New(sim.Config{Host: h.Hostname(), Dial: sim.Pipe(h.Gateway.ServeConn), Devices: ids, ConnectRate: 20})
	start := time.Now()
	if err := f.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer f.Disconnect()
	// The limiter allows a burst of 1 and then one every 50 ms: nine waits.
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("10 connects at 20/s took %s", took)
	}
}

// TestRefused: a wrong key is refused and Connect reports it.
func TestRefused(t *testing.T) {
	h := hubtest.Start(t)
	ids := register(t, h, 2)
	ids[1].Key = ids[0].Key
	f := sim.New(sim.Config{Host: h.Hostname(), Dial: sim.Pipe(h.Gateway.ServeConn), Devices: ids})
	err := f.Connect(context.Background())
	defer f.Disconnect()
	if err == nil || !strings.Contains(err.Error(), "1 of 2 devices did not connect") || !strings.Contains(err.Error(), "sim-001") {
		t.Fatalf("got %v", err)
	}
	if s := f.Stats(); s.Connected != 1 || s.ConnectFailures != 1 {
		t.Fatalf("stats %+v", s)
	}
}
