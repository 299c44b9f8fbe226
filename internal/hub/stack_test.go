package hub_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
)

// TestIdleConnectionsKeepSmallStacks: a device that connected, subscribed
// and went idle holds a goroutine with a 2 KB stack, not the 4 KB one
// that handling its SUBSCRIBE grew (the garbage collector never halves a
// waiting connection's 4 KB stack: see gateway's conn.read). Goroutine
// stacks are the largest part of an idle connection's memory.
//
// Under the race detector every goroutine waiting on a socket holds 4 KB
// anyway, so there the test cannot tell; `make test` runs it without
// -race too (test-memory).
func TestIdleConnectionsKeepSmallStacks(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's stacks are not a release build's: run without -race (make test-memory)")
	}
	h := hubtest.Start(t)
	ctx := context.Background()
	const n = 1000
	var devs []*herd.Device
	for i := range n {
		d, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: fmt.Sprintf("idle-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	// The stacks in use, the least of a few looks 100 ms apart: the
	// hub's other goroutines (a store write in flight, say) hold more at
	// one moment than at the next, and only ever add.
	stacks := func() int64 {
		least := int64(math.MaxInt64)
		for look := range 3 {
			if look > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			for range 3 {
				runtime.GC()
				debug.FreeOSMemory()
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			least = min(least, int64(ms.StackInuse))
		}
		return least
	}
	before := stacks()
	for _, d := range devs {
		nc, err := net.Dial("tcp", h.MQTTPlainAddr)
		if err != nil {
			t.Fatal(err)
		}
		dev := rawOn(t, nc, d)
		dev.connect(t)
		dev.subscribe(t, "$iothub/methods/POST/#", "$iothub/twin/res/#")
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == n }, "the devices are not all connected")
	per := (stacks() - before) / n
	// What a fresh goroutine waiting on a socket holds, measured the same
	// way (the race detector's builds have larger frames and stacks).
	fresh := freshReaderStack(t, n, stacks)
	t.Logf("goroutine stacks: %d bytes per idle connection, %d per fresh goroutine waiting on a socket", per, fresh)
	if per > fresh*5/4 {
		t.Errorf("an idle connection holds %d bytes of goroutine stack, a fresh reader %d: the reader's grown stack is kept", per, fresh)
	}
}

// freshReaderStack is the stack per goroutine of n goroutines started to
// wait in a read on a loopback socket.
func freshReaderStack(t *testing.T, n int, stacks func() int64) int64 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	before := stacks()
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		go func() { _, _ = c.Read(make([]byte, 128)) }()
	}
	per := (stacks() - before) / int64(n)
	for _, c := range conns {
		c.Close()
	}
	for range n {
		(<-accepted).Close()
	}
	return per
}
