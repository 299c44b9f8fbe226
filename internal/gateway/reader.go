package gateway

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// readBufSize is the size of the pooled read buffer a connection borrows
// while it has unread data.
const readBufSize = 4096

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// errTooLarge is returned for a packet above the size limit.
var errTooLarge = errors.New("packet too large")

// packetReader buffers a connection's input without holding a buffer while
// the connection is idle: it waits for the first byte of the next packet
// with a one-byte read, then borrows a pooled buffer for the rest, and
// gives it back once drained. An idle device therefore costs no read
// buffer (the memory budget is ≤ 10 KB per idle device).
type packetReader struct {
	src  io.Reader
	max  int
	one  [1]byte
	has1 bool
	buf  *[]byte
	r, w int
}

func (p *packetReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if p.has1 {
		b[0] = p.one[0]
		p.has1 = false
		return 1, nil
	}
	if p.r < p.w {
		n := copy(b, (*p.buf)[p.r:p.w])
		p.r += n
		return n, nil
	}
	if len(b) >= readBufSize {
		return p.src.Read(b)
	}
	if p.buf == nil {
		p.buf = readBufs.Get().(*[]byte)
	}
	n, err := p.src.Read(*p.buf)
	p.r, p.w = 0, n
	if n > 0 {
		m := copy(b, (*p.buf)[:n])
		p.r = m
		return m, nil
	}
	return 0, err
}

// idle blocks until the next packet's first byte is available, returning
// the read buffer to the pool if it is empty.
func (p *packetReader) idle() error {
	if p.has1 || p.r < p.w {
		return nil
	}
	if p.buf != nil {
		readBufs.Put(p.buf)
		p.buf = nil
		p.r, p.w = 0, 0
	}
	if _, err := io.ReadFull(p.src, p.one[:]); err != nil {
		return err
	}
	p.has1 = true
	return nil
}

// release gives the buffer back (when the connection ends).
func (p *packetReader) release() {
	if p.buf != nil {
		readBufs.Put(p.buf)
		p.buf = nil
	}
}

// fill makes sure at least n bytes after the pending first byte are
// buffered (n ≤ 4).
func (p *packetReader) fill(n int) error {
	if p.buf == nil {
		p.buf = readBufs.Get().(*[]byte)
		p.r, p.w = 0, 0
	}
	if p.r > 0 && p.w-p.r < n {
		copy(*p.buf, (*p.buf)[p.r:p.w])
		p.w -= p.r
		p.r = 0
	}
	for p.w-p.r < n {
		m, err := p.src.Read((*p.buf)[p.w:])
		p.w += m
		if err != nil && p.w-p.r < n {
			return err
		}
	}
	return nil
}

// next reads one packet. The remaining length is checked against the
// limit before the codec allocates the packet body (packets.ReadPacket
// would allocate whatever length the peer claims). Decoding the
// variable-length integer here (MQTT 3.1.1 §2.2.3) is only that guard;
// the packet itself is decoded by the paho codec.
func (p *packetReader) next() (packets.ControlPacket, error) {
	if err := p.idle(); err != nil {
		return nil, err
	}
	length, mult := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return nil, fmt.Errorf("malformed remaining length")
		}
		if err := p.fill(i + 1); err != nil {
			return nil, err
		}
		b := (*p.buf)[p.r+i]
		length += int(b&0x7f) * mult
		mult *= 128
		if b&0x80 == 0 {
			break
		}
	}
	if length > p.max {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", errTooLarge, length, p.max)
	}
	return packets.ReadPacket(p)
}
