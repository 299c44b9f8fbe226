package gateway

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// errMalformed marks a packet that breaks an MQTT 3.1.1 rule the paho
// codec does not enforce. The connection is closed without an answer
// (protocol_violation), as the standard requires of a server.
var errMalformed = errors.New("malformed packet")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// checkFixedHeader checks the first byte of a packet, before its body is
// read: the reserved packet types 0 and 15 are forbidden (MQTT 3.1.1
// §2.2.1); PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry the flags 0b0010
// [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1], every other packet but
// PUBLISH 0b0000 [MQTT-2.2.2-1]; a PUBLISH must not have both QoS bits
// set [MQTT-3.3.1-4]. Invalid flags close the connection [MQTT-2.2.2-2].
func checkFixedHeader(b byte) error {
	kind, flags := b>>4, b&0x0f
	switch kind {
	case 0, 15:
		return malformed("reserved packet type %d", kind)
	case packets.Publish:
		if flags&0x06 == 0x06 {
			return malformed("PUBLISH with QoS 3")
		}
		return nil
	case packets.Pubrel, packets.Subscribe, packets.Unsubscribe:
		if flags != 0x02 {
			return malformed("%s with fixed-header flags %04b, not 0010", packets.PacketNames[kind], flags)
		}
		return nil
	}
	if flags != 0 {
		return malformed("%s with fixed-header flags %04b, not 0000", packets.PacketNames[kind], flags)
	}
	return nil
}

// checkPacket applies the rules of a decoded packet that the codec lets
// through: UTF-8 strings (client id, user name, topic names and filters)
// must be well formed and free of U+0000 [MQTT-1.5.3-1] [MQTT-1.5.3-2];
// SUBSCRIBE and UNSUBSCRIBE must carry at least one filter
// [MQTT-3.8.3-3] [MQTT-3.10.3-2]; a requested QoS is 0, 1 or 2
// [MQTT-3-8.3-4]. The codec stops reading UNSUBSCRIBE filters at the
// first empty one and drops the rest, so the filters it returns must
// account for the whole packet.
func checkPacket(pkt packets.ControlPacket) error {
	switch p := pkt.(type) {
	case *packets.ConnectPacket:
		if err := checkString("client id", p.ClientIdentifier); err != nil {
			return err
		}
		if err := checkString("user name", p.Username); err != nil {
			return err
		}
		return checkString("Will topic", p.WillTopic)
	case *packets.PublishPacket:
		return checkString("topic name", p.TopicName)
	case *packets.SubscribePacket:
		if len(p.Topics) == 0 {
			return malformed("SUBSCRIBE without a topic filter")
		}
		for i, f := range p.Topics {
			if err := checkString("topic filter", f); err != nil {
				return err
			}
			if p.Qoss[i] > 2 {
				return malformed("SUBSCRIBE to %q asks for QoS %d", f, p.Qoss[i])
			}
		}
	case *packets.UnsubscribePacket:
		if len(p.Topics) == 0 {
			return malformed("UNSUBSCRIBE without a topic filter")
		}
		n := 2 // packet identifier
		for _, f := range p.Topics {
			if err := checkString("topic filter", f); err != nil {
				return err
			}
			n += 2 + len(f)
		}
		if n != p.RemainingLength {
			return malformed("UNSUBSCRIBE with an empty topic filter or trailing bytes")
		}
	}
	return nil
}

// checkString applies the rules of an MQTT UTF-8 encoded string.
func checkString(what, s string) error {
	if !utf8.ValidString(s) {
		return malformed("%s %q is not well-formed UTF-8", what, s)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return malformed("%s %q contains U+0000", what, s)
	}
	return nil
}
