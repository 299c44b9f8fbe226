package gateway

import (
	"bytes"
	"testing"
)

// FuzzPacketReader feeds arbitrary bytes to the packet reader: it must
// return packets or errors, never panic, and every packet it returns must
// pass the rules of rules.go.
func FuzzPacketReader(f *testing.F) {
	for _, seed := range [][]byte{
		{0xc0, 0x00},                         // PINGREQ
		{0x82, 0x02, 0x00, 0x01},             // SUBSCRIBE without filters
		{0xa2, 0x04, 0x00, 0x01, 0x00, 0x00}, // UNSUBSCRIBE with an empty filter
		{0x30, 0x05, 0x00, 0x01, 0x00, 'x', 'y'},
		{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &packetReader{src: bytes.NewReader(b), max: MaxPacket}
		for range 16 {
			pkt, err := r.next()
			if err != nil {
				return
			}
			if err := checkPacket(pkt); err != nil {
				t.Fatalf("next returned a packet that breaks the rules: %v", err)
			}
		}
	})
}
