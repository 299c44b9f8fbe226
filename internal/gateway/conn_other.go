//go:build !unix

package gateway

import (
	"net"
	"syscall"
)

// rawSocket returns nil: the write fast path needs a non-blocking write(2)
// on the socket, which only Unix systems have. Every packet then goes
// through the queue and its writer goroutine.
func rawSocket(net.Conn) syscall.RawConn { return nil }

// tryWrite is never called without a raw socket; should it be, it writes
// nothing and leaves the packet to the writer goroutine.
func (c *conn) tryWrite([]byte) (int, error) { return 0, nil }
