package gateway

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// readBufSize is the size of the pooled read buffer a connection borrows
// when a packet does not fit its small inline buffer.
const readBufSize = 4096

// smallBufSize is the inline buffer an idle connection reads into: big
// enough for the typical device packet (PINGREQ, a method response, a twin
// request), small enough for the per-device memory budget.
const smallBufSize = 128

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// errTooLarge is returned for a packet above the size limit.
var errTooLarge = errors.New("packet too large")

// packetReader buffers a connection's input without holding a large
// buffer while the connection is idle: it waits for the next packet by
// reading into a small inline buffer, which usually receives the whole
// packet in one system call, and borrows a pooled 4 KB buffer only while a
// larger packet is being read (the memory budget is ≤ 10 KB per idle
// device).
type packetReader struct {
	src    io.Reader
	max    int
	small  [smallBufSize]byte
	pooled *[]byte
	b      []byte // small[:] or *pooled
	r, w   int
}

// Read implements io.Reader for the packet codec.
func (p *packetReader) Read(dst []byte) (int, error) {
	if len(dst) == 0 {
		return 0, nil
	}
	if p.r < p.w {
		n := copy(dst, p.b[p.r:p.w])
		p.r += n
		return n, nil
	}
	if len(dst) >= readBufSize {
		return p.src.Read(dst)
	}
	if p.pooled == nil {
		p.pooled = readBufs.Get().(*[]byte)
	}
	p.b = *p.pooled
	n, err := p.src.Read(p.b)
	p.r, p.w = 0, n
	if n == 0 {
		return 0, err
	}
	m := copy(dst, p.b[:n])
	p.r = m
	return m, nil
}

// idle blocks until the next packet starts arriving. With nothing
// pending it gives the pooled buffer back and reads into the small one.
func (p *packetReader) idle() error {
	if p.r < p.w {
		return nil
	}
	p.release()
	for {
		n, err := p.src.Read(p.b)
		p.r, p.w = 0, n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// buffered says whether bytes of the next packet have been read already.
func (p *packetReader) buffered() bool { return p.r < p.w }

// release gives the pooled buffer back; only call it with nothing pending.
func (p *packetReader) release() {
	if p.pooled != nil {
		readBufs.Put(p.pooled)
		p.pooled = nil
	}
	p.b = p.small[:]
	p.r, p.w = 0, 0
}

// fill makes sure at least n (≤ 5) bytes are buffered.
func (p *packetReader) fill(n int) error {
	if p.w-p.r >= n {
		return nil
	}
	if len(p.b)-p.r < n {
		copy(p.b, p.b[p.r:p.w])
		p.w -= p.r
		p.r = 0
	}
	for p.w-p.r < n {
		m, err := p.src.Read(p.b[p.w:])
		p.w += m
		if err != nil && p.w-p.r < n {
			return err
		}
	}
	return nil
}

// next reads one packet. The fixed-header flags and the remaining length
// are checked before the codec allocates the packet body (packets.ReadPacket
// would allocate whatever length the peer claims). Decoding the
// variable-length integer here (MQTT 3.1.1 §2.2.3) is only that guard;
// the packet itself is decoded by the paho codec, and then checked against
// the rules the codec does not enforce (rules.go).
func (p *packetReader) next() (packets.ControlPacket, error) {
	if err := p.idle(); err != nil {
		return nil, err
	}
	if err := checkFixedHeader(p.b[p.r]); err != nil {
		return nil, err
	}
	length, mult := 0, 1
	for i := 1; ; i++ {
		if i == 5 {
			return nil, fmt.Errorf("malformed remaining length")
		}
		if err := p.fill(i + 1); err != nil {
			return nil, err
		}
		b := p.b[p.r+i]
		length += int(b&0x7f) * mult
		mult *= 128
		if b&0x80 == 0 {
			break
		}
	}
	if length > p.max {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", errTooLarge, length, p.max)
	}
	pkt, err := packets.ReadPacket(p)
	if err != nil {
		return nil, err
	}
	if err := checkPacket(pkt); err != nil {
		return nil, err
	}
	return pkt, nil
}
