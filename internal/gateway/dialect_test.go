package gateway_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/hubtest"
)

type invokeResult struct {
	res *herd.MethodResult
	err error
}

// invokeAsync invokes a method through the REST API and the service SDK.
func invokeAsync(t testing.TB, h *hubtest.Hub, id string, req herd.MethodRequest) <-chan invokeResult {
	done := make(chan invokeResult, 1)
	go func() {
		res, err := h.Service.InvokeMethod(context.Background(), id, req)
		done <- invokeResult{res, err}
	}()
	return done
}

// answer reads the next method request on c and answers it.
func answer(t testing.TB, c *rawClient, status int, payload string) *packets.PublishPacket {
	t.Helper()
	p := c.nextPublish()
	name, rid, ok := parseMethodTopic(p.TopicName)
	if !ok {
		t.Fatalf("not a method request: %s", p.TopicName)
	}
	_ = name
	c.publish("$iothub/methods/res/"+strconv.Itoa(status)+"/?$rid="+rid, 0, []byte(payload))
	return p
}

func parseMethodTopic(topic string) (name, rid string, ok bool) {
	rest, ok := strings.CutPrefix(topic, "$iothub/methods/POST/")
	if !ok {
		return "", "", false
	}
	name, q, ok := strings.Cut(rest, "/?$rid=")
	return name, q, ok
}

func TestMethodRoundTrip(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	c.subscribe("$iothub/methods/POST/#")
	for _, payload := range []string{`null`, `""`, `"foo"`, `{"k1":"v1"}`, `{}`, `[1,2,3]`} {
		done := invokeAsync(t, h, d.id, herd.MethodRequest{MethodName: "reboot", Payload: json.RawMessage(payload)})
		p := answer(t, c, 201, `{"echo":`+payload+`}`)
		if string(p.Payload) != payload {
			t.Fatalf("device got payload %s, want %s", p.Payload, payload)
		}
		if name, _, _ := parseMethodTopic(p.TopicName); name != "reboot" {
			t.Fatalf("method name %q", name)
		}
		if p.Qos != 0 {
			t.Fatalf("method request QoS %d, want 0", p.Qos)
		}
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.res.Status != 201 || string(r.res.Payload) != `{"echo":`+payload+`}` {
			t.Fatalf("result %d %s", r.res.Status, r.res.Payload)
		}
	}
	// A device answering with an empty or non-JSON body.
	done := invokeAsync(t, h, d.id, herd.MethodRequest{MethodName: "x"})
	answer(t, c, 500, ``)
	if r := <-done; r.err != nil || string(r.res.Payload) != "null" || r.res.Status != 500 {
		t.Fatalf("empty answer: %+v %v", r.res, r.err)
	}
}

func TestMethodFailures(t *testing.T) {
	fake := clock.NewFake(time.Now())
	h := hubtest.Start(t, hubtest.WithFakeClock(fake))
	d := newDevice(t, h, "dev1")
	ctx := context.Background()

	_, err := h.Service.InvokeMethod(ctx, "ghost", herd.MethodRequest{MethodName: "m"})
	if !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	_, err = h.Service.InvokeMethod(ctx, d.id, herd.MethodRequest{MethodName: "m"})
	if !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Fatalf("offline device: %v", err)
	}
	// Connected but not subscribed to methods is not online for methods.
	c := dialPlain(t, h)
	c.connect(d, false, fake.Now())
	_, err = h.Service.InvokeMethod(ctx, d.id, herd.MethodRequest{MethodName: "m"})
	if !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Fatalf("unsubscribed device: %v", err)
	}
	// Subscribed but silent: 504 once the response timeout passes.
	c.subscribe("$iothub/methods/POST/#")
	done := invokeAsync(t, h, d.id, herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 5})
	p := c.nextPublish()
	fake.Advance(4 * time.Second)
	select {
	case r := <-done:
		t.Fatalf("finished before the timeout: %+v", r)
	default:
	}
	fake.Advance(2 * time.Second)
	if r := <-done; !herd.IsCode(r.err, herd.ErrGatewayTimeout) {
		t.Fatalf("silent device: %+v", r)
	}
	// A late answer is ignored and the connection stays.
	_, rid, _ := parseMethodTopic(p.TopicName)
	c.publish("$iothub/methods/res/200/?$rid="+rid, 0, []byte(`1`))
	c.ping()
}

func TestMethodConnectTimeoutWaitsForDevice(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	done := invokeAsync(t, h, d.id, herd.MethodRequest{MethodName: "m", ConnectTimeoutInSeconds: 60})
	// The call waits (woken by the bus, no polling) for the device to
	// connect and subscribe.
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	c.subscribe("$iothub/methods/POST/#")
	answer(t, c, 200, `"late but fine"`)
	if r := <-done; r.err != nil || string(r.res.Payload) != `"late but fine"` {
		t.Fatalf("%+v", r)
	}
}

func TestMethodValidation(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	ctx := context.Background()
	big := `"` + strings.Repeat("x", 128*1024) + `"`
	cases := []struct {
		name string
		req  herd.MethodRequest
		code herd.ErrorCode
	}{
		{"no name", herd.MethodRequest{}, herd.ErrArgumentNull},
		{"bad name", herd.MethodRequest{MethodName: "a/b"}, herd.ErrArgumentInvalid},
		{"response timeout too short", herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 4}, herd.ErrArgumentInvalid},
		{"response timeout too long", herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 301}, herd.ErrArgumentInvalid},
		{"connect timeout too long", herd.MethodRequest{MethodName: "m", ConnectTimeoutInSeconds: 301}, herd.ErrArgumentInvalid},
		{"negative connect timeout", herd.MethodRequest{MethodName: "m", ConnectTimeoutInSeconds: -1}, herd.ErrArgumentInvalid},
		{"payload too large", herd.MethodRequest{MethodName: "m", Payload: json.RawMessage(big)}, herd.ErrMessageTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.Service.InvokeMethod(ctx, d.id, tc.req)
			if !herd.IsCode(err, tc.code) {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
}

func TestTwinOverMQTT(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	ctx := context.Background()
	c := dialPlain(t, h)
	c.connect(d, false, time.Now())
	c.subscribe("$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#")

	c.publish("$iothub/twin/GET/?$rid=abc-1", 0, []byte(" "))
	p := c.nextPublish()
	if p.TopicName != "$iothub/twin/res/200/?$rid=abc-1" {
		t.Fatalf("GET reply topic %q", p.TopicName)
	}
	var view struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	if err := json.Unmarshal(p.Payload, &view); err != nil || view.Desired["$version"] != float64(1) || view.Reported["$version"] != float64(1) {
		t.Fatalf("GET body %s (%v)", p.Payload, err)
	}

	c.publish("$iothub/twin/PATCH/properties/reported/?$rid=r2", 1, []byte(`{"temp":21.5,"fw":{"v":"1.0"}}`))
	var reply *packets.PublishPacket
	var acked bool
	for reply == nil || !acked {
		switch pk := c.read().(type) {
		case *packets.PublishPacket:
			reply = pk
		case *packets.PubackPacket:
			acked = true
		}
	}
	if reply.TopicName != "$iothub/twin/res/204/?$rid=r2&$version=2" || len(reply.Payload) != 0 {
		t.Fatalf("PATCH reply %q %q", reply.TopicName, reply.Payload)
	}
	tw, err := h.Service.GetTwin(ctx, d.id)
	if err != nil || tw.Properties.Reported["temp"] == nil {
		t.Fatalf("reported not stored: %+v %v", tw, err)
	}

	// Errors are answered on the response topic with JSON.
	for _, bad := range []string{`not json`, `{"a b":1}`, `[1]`} {
		c.publish("$iothub/twin/PATCH/properties/reported/?$rid=bad", 0, []byte(bad))
		p := c.nextPublish()
		if !strings.HasPrefix(p.TopicName, "$iothub/twin/res/400/?$rid=bad") {
			t.Fatalf("error reply topic %q for %s", p.TopicName, bad)
		}
		var e struct {
			ErrorCode int    `json:"errorCode"`
			Message   string `json:"message"`
		}
		if err := json.Unmarshal(p.Payload, &e); err != nil || e.ErrorCode < 400000 || e.Message == "" {
			t.Fatalf("error body %s", p.Payload)
		}
	}

	// Service desired writes reach the device with $version.
	_, err = h.Service.UpdateTwin(ctx, d.id, herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"interval": 5}}}, "*")
	if err != nil {
		t.Fatal(err)
	}
	p = c.nextPublish()
	if p.TopicName != "$iothub/twin/PATCH/properties/desired/?$version=2" {
		t.Fatalf("desired topic %q", p.TopicName)
	}
	var desired map[string]any
	if err := json.Unmarshal(p.Payload, &desired); err != nil || desired["interval"] != float64(5) || desired["$version"] != float64(2) {
		t.Fatalf("desired body %s", p.Payload)
	}
}
