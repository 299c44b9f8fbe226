//go:build unix

package gateway

import (
	"net"
	"syscall"
)

// rawSocket returns the socket of a plain TCP connection, for the write
// fast path of enqueue, or nil for any other connection.
func rawSocket(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// tryWrite writes what the socket accepts now, without waiting: one
// write(2) on the non-blocking descriptor, never a wait on the poller.
func (c *conn) tryWrite(b []byte) (int, error) {
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if werr != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case werr == syscall.EAGAIN:
		return 0, nil
	case werr != nil:
		return 0, werr
	}
	return max(n, 0), nil
}
