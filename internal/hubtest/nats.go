package hubtest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS starts a NATS server in the test process, on a free loopback port,
// for the nodes of a test cluster to dial, and returns its URL. It stops
// when the test ends.
func NATS(t testing.TB) string { return StartNATS(t).URL }

// NATSServer is a NATS server of a test that the test may restart.
type NATSServer struct {
	// URL is where it listens, the same across restarts.
	URL  string
	t    testing.TB
	port int
	mu   sync.Mutex
	ns   *server.Server
}

// StartNATS is NATS with a handle to restart the server.
func StartNATS(t testing.TB) *NATSServer {
	t.Helper()
	s := &NATSServer{t: t, port: -1}
	s.start()
	s.URL = s.ns.ClientURL()
	s.port = s.ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.stop)
	return s
}

func (s *NATSServer) start() {
	s.t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: s.port, NoLog: true, NoSigs: true})
	if err != nil {
		s.t.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		s.t.Fatal("nats server: not ready within 10 s")
	}
	s.mu.Lock()
	s.ns = ns
	s.mu.Unlock()
}

func (s *NATSServer) stop() {
	s.mu.Lock()
	ns := s.ns
	s.mu.Unlock()
	ns.Shutdown()
	ns.WaitForShutdown()
}

// Restart shuts the server down (every client is cut off and what it held
// is lost) and starts a new one on the same port.
func (s *NATSServer) Restart() {
	s.t.Helper()
	s.stop()
	s.start()
}
