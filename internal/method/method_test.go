package method

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/clock"
)

// device is a bus connection that answers (or drops) method calls.
type device struct {
	s      *Service
	id     string
	answer bool
	drop   atomic.Int32 // drop this many requests before writing them
	calls  atomic.Int32
}

func (d *device) Features() bus.Feature     { return bus.Methods }
func (d *device) SendDesired(int64, []byte) {}
func (d *device) SendMethod(mc *bus.MethodCall) bool {
	d.calls.Add(1)
	if d.drop.Add(-1) >= 0 {
		go mc.Dropped()
		return true
	}
	if mc.Sent != nil {
		mc.Sent()
	}
	if d.answer {
		go d.s.Respond(d.id, mc.RID, 200, mc.Payload)
	}
	return true
}

func exists(_ context.Context, id string) error {
	if strings.HasPrefix(id, "ghost") {
		return herd.Errorf(herd.ErrDeviceNotFound, "no %s", id)
	}
	return nil
}

func TestValidate(t *testing.T) {
	ok := herd.MethodRequest{MethodName: "reboot"}
	if err := Validate(&ok); err != nil || ok.ResponseTimeoutInSeconds != 30 || string(ok.Payload) != "null" {
		t.Fatalf("defaults: %+v %v", ok, err)
	}
	for _, bad := range []herd.MethodRequest{
		{}, {MethodName: "a b"}, {MethodName: "a$b"}, {MethodName: "m", ResponseTimeoutInSeconds: 301},
		{MethodName: "m", ConnectTimeoutInSeconds: -1}, {MethodName: "m", Payload: json.RawMessage(`{`)},
	} {
		if err := Validate(&bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestInvoke(t *testing.T) {
	fake := clock.NewFake(time.Now())
	b := bus.New()
	reg := prometheus.NewRegistry()
	s := NewService(b, exists, fake, reg)
	d := &device{s: s, id: "d1", answer: true}
	b.Attach("d1", d)
	ctx := context.Background()
	var sent atomic.Int32
	res, err := s.Invoke(ctx, "d1", herd.MethodRequest{MethodName: "m", Payload: json.RawMessage(`7`), ResponseTimeoutInSeconds: 5}, OnSent(func() { sent.Add(1) }))
	if err != nil || res.Status != 200 || string(res.Payload) != "7" || sent.Load() != 1 {
		t.Fatalf("%+v %v sent=%d", res, err, sent.Load())
	}
	if _, err := s.Invoke(ctx, "ghost", herd.MethodRequest{MethodName: "m"}); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Fatalf("ghost: %v", err)
	}
	_, err = s.Invoke(ctx, "offline", herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 5})
	var no *NotOnlineError
	if !herd.IsCode(err, herd.ErrDeviceNotOnline) || !errorsAs(err, &no) || no.Timeout() != 0 {
		t.Fatalf("offline: %v", err)
	}
	// A request dropped before it was written is sent again.
	d.drop.Store(2)
	before := d.calls.Load()
	if _, err := s.Invoke(ctx, "d1", herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 5}); err != nil {
		t.Fatal(err)
	}
	if n := d.calls.Load() - before; n != 3 {
		t.Fatalf("%d sends, want 3", n)
	}
	// Two answered calls in the latency histogram; every call counted by
	// its outcome.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "herd_method_latency_seconds":
				got["latency samples"] = float64(m.GetHistogram().GetSampleCount())
			case "herd_method_calls_total":
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{"latency samples": 2, "answered": 2, "not_found": 1, "not_online": 1, "gateway_timeout": 0, "canceled": 0}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("metrics: %s = %v, want %v (all: %v)", k, got[k], w, got)
		}
	}
}

func errorsAs(err error, target **NotOnlineError) bool {
	e, ok := err.(*NotOnlineError)
	*target = e
	return ok
}

func TestRespondChecksDevice(t *testing.T) {
	fake := clock.NewFake(time.Now())
	b := bus.New()
	s := NewService(b, exists, fake, nil)
	silent := &device{s: s, id: "d1"}
	b.Attach("d1", silent)
	var rid atomic.Value
	done := make(chan error, 1)
	go func() {
		_, err := s.Invoke(context.Background(), "d1", herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 5},
			OnSent(func() {}))
		done <- err
	}()
	// Find the rid: the only pending call.
	deadline := time.Now().Add(10 * time.Second)
	for rid.Load() == nil && time.Now().Before(deadline) {
		for i := range s.shards {
			s.shards[i].mu.Lock()
			for id := range s.shards[i].calls {
				rid.Store(id)
			}
			s.shards[i].mu.Unlock()
		}
		time.Sleep(time.Millisecond)
	}
	r := rid.Load().(uint64)
	if err := s.Respond("d2", formatRID(r), 200, nil); err == nil {
		t.Fatal("another device answered the call")
	}
	if err := s.Respond("d1", "zz", 200, nil); err == nil {
		t.Fatal("a malformed rid was accepted")
	}
	for fake.Pending() == 0 {
		time.Sleep(time.Millisecond)
	}
	fake.Advance(5 * time.Second)
	if err := <-done; !herd.IsCode(err, herd.ErrGatewayTimeout) {
		t.Fatalf("silent device: %v", err)
	}
	if err := s.Respond("d1", formatRID(r), 200, nil); err == nil {
		t.Fatal("a late answer was accepted")
	}
}

func formatRID(id uint64) string { return strconv.FormatUint(id, 16) }
