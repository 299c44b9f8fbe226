package sim_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
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

func TestFleet(t *testing.T) {
	h := hubtest.Start(t)
	ids := register(t, h, 20)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	for _, tc := range []struct {
		name string
		addr string
		tls  *tls.Config
	}{
		{"plain", h.MQTTPlainAddr, nil},
		{"tls", h.MQTTAddr, &tls.Config{RootCAs: pool, ServerName: "localhost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := sim.New(sim.Config{Host: h.Hostname(), Addr: tc.addr, TLS: tc.tls, Devices: ids,
				Telemetry: 20 * time.Millisecond, ReportDesired: true, MethodStatus: 201})
			ctx := context.Background()
			if err := f.Connect(ctx); err != nil {
				t.Fatal(err)
			}
			defer f.Disconnect()
			hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == int64(len(ids)) }, "not all connected")
			for _, id := range ids[:5] {
				res, err := h.Methods.Invoke(ctx, id.ID, herd.MethodRequest{MethodName: "ping", Payload: json.RawMessage(`{"n":1}`), ResponseTimeoutInSeconds: 30})
				if err != nil || res.Status != 201 || string(res.Payload) != `{"n":1}` {
					t.Fatalf("%s: %+v %v", id.ID, res, err)
				}
			}
			tw, err := h.Service.UpdateTwin(ctx, ids[0].ID, herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"rate": 2}}}, "*")
			if err != nil {
				t.Fatal(err)
			}
			want := tw.Properties.Desired["$version"]
			hubtest.Eventually(t, 10*time.Second, func() bool {
				tw, err := h.Service.GetTwin(ctx, ids[0].ID)
				return err == nil && fmt.Sprint(tw.Properties.Reported["applied"]) == fmt.Sprint(want)
			}, "desired not applied and reported")
			hubtest.Eventually(t, 10*time.Second, func() bool { return f.Stats().TelemetrySent >= 20 }, "no telemetry")
			f.Disconnect()
			hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "still connected")
			if s := f.Stats(); s.Connected != 0 || s.MethodsAnswered < 5 || s.DesiredApplied < 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}
