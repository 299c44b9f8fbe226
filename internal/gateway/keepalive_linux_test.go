package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd/internal/hubtest"
)

// The hub's device sockets have no TCP keep-alive, MQTT's doing that work,
// except for a connection that asked for no MQTT keep-alive: plain and
// TLS alike. The option is read from the hub's own end of each
// connection, a socket of this process.
func TestTCPKeepAliveOnlyWithoutMQTTKeepAlive(t *testing.T) {
	h := hubtest.Start(t)
	for i, tc := range []struct {
		name      string
		tls       bool
		keepAlive uint16
		want      bool
	}{
		{"plain, MQTT keep-alive 60 s", false, 60, false},
		{"plain, no MQTT keep-alive", false, 0, true},
		{"TLS, MQTT keep-alive 60 s", true, 60, false},
		{"TLS, no MQTT keep-alive", true, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, c := h.MQTTPlainAddr, (*rawClient)(nil)
			if tc.tls {
				addr, c = h.MQTTAddr, dialTLS(t, h)
			} else {
				c = dialPlain(t, h)
			}
			d := newDevice(t, h, fmt.Sprintf("keepalive-%d", i))
			cp := connectPacket(d.id, d.username(), d.token(time.Now().Add(time.Hour)), true)
			cp.Keepalive = tc.keepAlive
			if ack := c.connectWith(cp); ack.ReturnCode != packets.Accepted {
				t.Fatalf("CONNACK %d", ack.ReturnCode)
			}
			// A SUBACK comes from the read loop, which starts once the
			// CONNECT has been handled in full.
			c.subscribe("$iothub/methods/POST/#")
			if got := hubKeepAlive(t, addr, c.nc.LocalAddr().String()); got != tc.want {
				t.Errorf("SO_KEEPALIVE on the hub's socket: %v, want %v", got, tc.want)
			}
		})
	}
}

// hubKeepAlive reads SO_KEEPALIVE on this process's end of the loopback
// TCP connection from client to server: the socket whose inode the
// kernel's table (/proc/net/tcp) lists for it, found among the process's
// file descriptors.
func hubKeepAlive(t *testing.T, server, client string) bool {
	t.Helper()
	port := func(addr string) string {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(p)
		return fmt.Sprintf("%04X", n)
	}
	local, remote := port(server), port(client)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inode := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st … uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) > 9 && strings.HasSuffix(fs[1], ":"+local) && strings.HasSuffix(fs[2], ":"+remote) {
			inode = fs[9]
		}
	}
	if inode == "" {
		t.Fatalf("no socket from %s to %s in /proc/net/tcp", client, server)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		if link, _ := os.Readlink("/proc/self/fd/" + e.Name()); link == "socket:["+inode+"]" {
			fd, _ := strconv.Atoi(e.Name())
			v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			if err != nil {
				t.Fatal(err)
			}
			return v != 0
		}
	}
	t.Fatalf("the socket of inode %s is not this process's", inode)
	return false
}
