package gateway_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd/internal/gateway"
	"github.com/herd-iot/herd/internal/hubtest"
)

// disconnects is herd_mqtt_disconnects_total for one reason.
func disconnects(t testing.TB, h *hubtest.Hub, reason string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "herd_mqtt_disconnects_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// The MQTT 3.1.1 rules the paho codec does not enforce: each packet below
// must close the connection (protocol_violation), without an answer. The
// bad packet is followed by a PINGREQ in the same write, so a hub that lets
// it through answers PINGRESP and the test fails at once.
func TestMalformedPacketsClose(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	publish := func(topic string, qos byte) []byte {
		pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		pp.TopicName, pp.Qos, pp.MessageID, pp.Payload = topic, qos, 1, []byte(`{}`)
		return encodePacket(t, pp)
	}
	subscribe := func(qos byte, filters ...string) []byte {
		sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
		sp.MessageID, sp.Topics = 1, filters
		for range filters {
			sp.Qoss = append(sp.Qoss, qos)
		}
		return encodePacket(t, sp)
	}
	unsubscribe := func(filters ...string) []byte {
		up := packets.NewControlPacket(packets.Unsubscribe).(*packets.UnsubscribePacket)
		up.MessageID, up.Topics = 1, filters
		return encodePacket(t, up)
	}
	withFlags := func(b []byte, flags byte) []byte {
		b = bytes.Clone(b)
		b[0] = b[0]&0xf0 | flags
		return b
	}
	cases := []struct {
		name   string
		packet []byte
	}{
		// [MQTT-1.5.3-2] and [MQTT-1.5.3-1] in topic names.
		{"telemetry topic with U+0000", publish("devices/dev1/messages/events/a=\x00", 1)},
		{"telemetry topic with bad UTF-8", publish("devices/dev1/messages/events/a=\xff", 0)},
		{"telemetry topic with a UTF-16 surrogate", publish("devices/dev1/messages/events/a=\xed\xa0\x80", 0)},
		{"twin request rid with U+0000", publish("$iothub/twin/GET/?$rid=1\x00", 0)},
		{"method response rid with bad UTF-8", publish("$iothub/methods/res/200/?$rid=\xc3", 0)},
		// [MQTT-3.3.1-4]
		{"publish with QoS 3", withFlags(publish("devices/dev1/messages/events/", 1), 0x06)},
		// [MQTT-3.8.3-3], [MQTT-3.8.1-1], [MQTT-1.5.3-2], [MQTT-3-8.3-4]
		{"subscribe without filters", subscribe(0)},
		{"subscribe with flags 0000", withFlags(subscribe(0, "$iothub/twin/res/#"), 0x00)},
		{"subscribe with flags 0011", withFlags(subscribe(0, "$iothub/twin/res/#"), 0x03)},
		{"subscribe with flags 1010", withFlags(subscribe(0, "$iothub/twin/res/#"), 0x0a)},
		{"subscribe filter with U+0000", subscribe(0, "$iothub/twin/res/#\x00")},
		{"subscribe filter with bad UTF-8", subscribe(0, "$iothub/twin/res/#", "\xfe")},
		{"subscribe with QoS 3", subscribe(3, "$iothub/twin/res/#")},
		// [MQTT-3.10.3-2], [MQTT-3.10.1-1], [MQTT-1.5.3-2]
		{"unsubscribe without filters", unsubscribe()},
		{"unsubscribe with flags 0000", withFlags(unsubscribe("$iothub/twin/res/#"), 0x00)},
		{"unsubscribe with flags 0110", withFlags(unsubscribe("$iothub/twin/res/#"), 0x06)},
		{"unsubscribe filter with U+0000", unsubscribe("$iothub/twin/res/#\x00")},
		{"unsubscribe filter with bad UTF-8", unsubscribe("\x80")},
		{"unsubscribe with an empty filter", unsubscribe("", "$iothub/twin/res/#")},
		// [MQTT-3.6.1-1]: QoS 2 is not supported, so even a well-formed
		// PUBREL closes; one with the wrong flags is malformed.
		{"pubrel", []byte{0x62, 0x02, 0x00, 0x01}},
		{"pubrel with flags 0000", []byte{0x60, 0x02, 0x00, 0x01}},
		// [MQTT-2.2.2-1]
		{"pingreq with flags 0001", []byte{0xc1, 0x00}},
		{"puback with flags 1000", []byte{0x48, 0x02, 0x00, 0x01}},
		{"disconnect with flags 0010", []byte{0xe2, 0x00}},
		// §2.2.1: packet types 0 and 15 are reserved.
		{"packet type 15", []byte{0xf0, 0x00}},
	}
	ping := encodePacket(t, packets.NewControlPacket(packets.Pingreq))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := disconnects(t, h, "protocol_violation")
			c := dialPlain(t, h)
			c.connect(d, true, time.Now())
			c.sendRaw(append(bytes.Clone(tc.packet), ping...))
			c.expectClosed()
			hubtest.Eventually(t, 10*time.Second, func() bool {
				return disconnects(t, h, "protocol_violation") == before+1
			}, "the disconnect was not counted as protocol_violation")
		})
	}
	// The same rules hold for the strings of CONNECT: closed, no CONNACK.
	connects := []struct {
		name string
		mut  func(*packets.ConnectPacket)
	}{
		{"client id with U+0000", func(cp *packets.ConnectPacket) { cp.ClientIdentifier = "dev1\x00" }},
		{"client id with bad UTF-8", func(cp *packets.ConnectPacket) { cp.ClientIdentifier = "dev\xff" }},
		{"user name with U+0000", func(cp *packets.ConnectPacket) { cp.Username += "\x00" }},
		{"Will topic with U+0000", func(cp *packets.ConnectPacket) {
			cp.WillFlag, cp.WillTopic, cp.WillMessage = true, "devices/dev1/messages/events/a=\x00", []byte("bye")
		}},
		{"connect with flags 0001", nil},
	}
	for _, tc := range connects {
		t.Run(tc.name, func(t *testing.T) {
			c := dialPlain(t, h)
			cp := connectPacket(d.id, d.username(), d.token(time.Now().Add(time.Hour)), true)
			b := encodePacket(t, cp)
			if tc.mut != nil {
				tc.mut(cp)
				b = encodePacket(t, cp)
			} else {
				b[0] |= 0x01
			}
			c.sendRaw(b)
			c.expectClosed()
		})
	}
	// Well-formed packets next to the edge still pass.
	t.Run("valid neighbours", func(t *testing.T) {
		c := dialPlain(t, h)
		c.connect(d, true, time.Now())
		c.subscribe("$iothub/twin/res/#", "$iothub/methods/POST/#")
		up := packets.NewControlPacket(packets.Unsubscribe).(*packets.UnsubscribePacket)
		up.MessageID, up.Topics = 9, []string{"$iothub/methods/POST/#", "not/a/known/filter"}
		c.send(up)
		if ack, ok := c.read().(*packets.UnsubackPacket); !ok || ack.MessageID != 9 {
			t.Fatalf("expected UNSUBACK 9, got %v", ack)
		}
		c.publish("devices/dev1/messages/events/city=K%C3%B6ln&emoji=%F0%9F%90%91", 1, []byte("ü"))
		if _, ok := c.read().(*packets.PubackPacket); !ok {
			t.Fatalf("no PUBACK")
		}
		c.ping()
	})
}

// A telemetry body over 256 KB closes the connection, as Azure does; one of
// exactly 256 KB is accepted.
func TestTelemetryOverLimitCloses(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	c.connect(d, true, time.Now())
	c.publish("devices/dev1/messages/events/", 1, bytes.Repeat([]byte("x"), gateway.MaxTelemetry))
	if p, ok := c.read().(*packets.PubackPacket); !ok {
		t.Fatalf("a 256 KB body: expected PUBACK, got %v", p)
	}
	before := disconnects(t, h, "message_too_large")
	c.publish("devices/dev1/messages/events/", 1, bytes.Repeat([]byte("x"), gateway.MaxTelemetry+1))
	c.expectClosed()
	hubtest.Eventually(t, 10*time.Second, func() bool {
		return disconnects(t, h, "message_too_large") == before+1
	}, "the disconnect was not counted as message_too_large")
	if n := counter(t, h, "herd_telemetry_messages_total"); n != 1 {
		t.Fatalf("herd_telemetry_messages_total = %v, want 1 (the oversized message must not count)", n)
	}
}
