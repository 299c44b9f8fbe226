package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

// monitor streams events from GET /events into a channel.
func monitor(t *testing.T, h *hubtest.Hub, deviceID string) <-chan *herd.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan *herd.Event, 100)
	done := make(chan error, 1)
	go func() {
		done <- h.Service.MonitorEvents(ctx, deviceID, service.EventHandler{Event: func(e *herd.Event) error {
			ch <- e
			return nil
		}})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("monitor: %v", err)
		}
	})
	return ch
}

func counter(t *testing.T, h *hubtest.Hub, name string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

func TestTelemetry(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	other := newDevice(t, h, "dev2")
	all := monitor(t, h, "")
	onlyOther := monitor(t, h, other.id)
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Events.Subscribers() == 2 }, "monitors not attached")
	c := dialPlain(t, h)
	c.connect(d, true, time.Now())

	c.publish("devices/dev1/messages/events/%24.mid=dev1-msg-1&%24.ct=application%2Fjson&%24.ce=utf-8&temperatureAlert=false", 1, []byte(`{"temperature":21}`))
	if _, ok := c.read().(*packets.PubackPacket); !ok {
		t.Fatalf("no PUBACK for QoS 1 telemetry")
	}
	ev := <-all
	if ev.SystemProperties["$.mid"] != "dev1-msg-1" || ev.SystemProperties["$.ct"] != "application/json" ||
		ev.SystemProperties["$.cdid"] != "dev1" || ev.Properties["temperatureAlert"] != "false" || string(ev.Body) != `{"temperature":21}` {
		t.Fatalf("event %+v", ev)
	}
	if ev.EnqueuedTime.IsZero() {
		t.Fatalf("no enqueued time")
	}
	// Retained messages are not retained; they are marked.
	pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pp.TopicName, pp.Retain, pp.Payload = "devices/dev1/messages/events/", true, []byte("r")
	c.send(pp)
	if ev := <-all; ev.Properties["mqtt-retain"] != "true" {
		t.Fatalf("retain not marked: %+v", ev)
	}
	if n := counter(t, h, "herd_telemetry_messages_total"); n != 2 {
		t.Fatalf("herd_telemetry_messages_total = %v", n)
	}
	if len(onlyOther) != 0 {
		t.Fatalf("a monitor of dev2 got dev1's message")
	}
}

func TestWillIsForwarded(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	events := monitor(t, h, d.id)
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Events.Subscribers() == 1 }, "monitor not attached")

	c := dialPlain(t, h)
	cp := connectPacket(d.id, d.username(), d.token(time.Now().Add(time.Hour)), true)
	cp.WillFlag, cp.WillTopic, cp.WillMessage, cp.WillQos = true, "devices/dev1/messages/events/state=gone", []byte("bye"), 1
	if ack := c.connectWith(cp); ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReturnCode)
	}
	c.nc.Close() // unclean
	ev := <-events
	if string(ev.Body) != "bye" || ev.Properties["iothub-MessageType"] != "Will" || ev.Properties["state"] != "gone" {
		t.Fatalf("will %+v", ev)
	}
}
