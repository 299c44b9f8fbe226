// Package hubtest runs a whole Herd hub in-process for end-to-end tests:
// real SQLite in a temp folder, real TLS listeners on loopback :0 ports,
// and a Go service SDK client already pointed at it.
package hubtest

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/service"
)

// Hub is a running in-process hub.
type Hub struct {
	*hub.Hub
	// Dir is the data folder; start another Hub on it to test restarts.
	Dir string
	// URL is the REST API's base URL.
	URL string
	// CA is the PEM of the CA that signed the hub's certificate.
	CA []byte
	// ConnectionString is the iothubowner service connection string.
	ConnectionString string
	// Service is a service SDK client with iothubowner rights.
	Service *service.Client
	// MQTTAddr and MQTTPlainAddr are the device listeners (TLS, plain).
	MQTTAddr, MQTTPlainAddr string

	cancel context.CancelFunc
	done   chan error
}

// Option changes the hub's configuration before it starts.
type Option func(*hub.Config)

// WithDir uses dir as the data folder (to restart a hub on the same data).
func WithDir(dir string) Option { return func(c *hub.Config) { c.DataDir = dir } }

// WithFakeClock runs the hub on a manual clock: time and every expiry
// (tokens, method timeouts) move only when the test advances it.
func WithFakeClock(f *clock.Fake) Option {
	return func(c *hub.Config) { c.Now = f.Now; c.Clock = f }
}

// WithSQLite runs the hub on the SQLite database in its data folder,
// whatever HERD_TEST_STORE says (for a test that made that database with
// another program, such as herd demo). Give it after WithDir.
func WithSQLite() Option {
	return func(c *hub.Config) {
		s, err := store.Open(context.Background(), "", c.DataDir)
		if err != nil {
			panic("hubtest: open SQLite in " + c.DataDir + ": " + err.Error())
		}
		c.Store = s
	}
}

// WithConfig lets a test change any field.
func WithConfig(fn func(*hub.Config)) Option { return func(c *hub.Config) { fn(c) } }

// Start starts a hub on 127.0.0.1 :0 ports and stops it when the test
// ends.
func Start(t testing.TB, opts ...Option) *Hub {
	t.Helper()
	cfg := hub.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTPSAddr = "127.0.0.1:0"
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.MQTTPlainAddr = "127.0.0.1:0"
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if cfg.Store == nil {
		s, err := store.Open(ctx, StoreFor(t, cfg.DataDir), cfg.DataDir)
		if err != nil {
			cancel()
			t.Fatalf("open store: %v", err)
		}
		cfg.Store = s
	}
	h, err := hub.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start hub: %v", err)
	}
	th := &Hub{Hub: h, Dir: cfg.DataDir, URL: "https://" + h.HTTPSAddr().String(), cancel: cancel, done: make(chan error, 1)}
	if a := h.MQTTAddr(); a != nil {
		th.MQTTAddr = a.String()
	}
	if a := h.MQTTPlainAddr(); a != nil {
		th.MQTTPlainAddr = a.String()
	}
	trust := h.CAFile()
	if trust == "" {
		trust = cfg.TLSCert // the user's own certificate: trust it directly
	}
	if th.CA, err = os.ReadFile(trust); err != nil {
		t.Fatalf("read CA: %v", err)
	}
	if th.ConnectionString, err = h.ConnectionString("iothubowner"); err != nil {
		t.Fatalf("connection string: %v", err)
	}
	th.Service = th.Client(t, th.ConnectionString)
	go func() { th.done <- h.Run(ctx) }()
	t.Cleanup(th.Stop)
	return th
}

// StoreEnv names the store the test hubs use: "postgres" runs them on
// PostgreSQL (a throwaway server, internal/store/pgtest), anything else on
// SQLite in their data folder. `make test` runs the hub-level suites both
// ways.
const StoreEnv = "HERD_TEST_STORE"

// StoreFor returns the --store value of a test hub whose data folder is
// dir: "" for SQLite, or a PostgreSQL database kept per data folder (a
// restart on the same folder finds the same database), dropped when the
// test ends.
func StoreFor(t testing.TB, dir string) string {
	t.Helper()
	if os.Getenv(StoreEnv) != "postgres" {
		return ""
	}
	pgMu.Lock()
	defer pgMu.Unlock()
	if u, ok := pgURLs[dir]; ok {
		return u
	}
	u := pgtest.URL(t)
	pgURLs[dir] = u
	return u
}

var (
	pgMu   sync.Mutex
	pgURLs = map[string]string{}
)

// Client returns a service SDK client for the given connection string.
func (h *Hub) Client(t testing.TB, connectionString string) *service.Client {
	t.Helper()
	c, err := service.New(connectionString, service.WithCA(h.CA), service.WithEndpoint(h.URL))
	if err != nil {
		t.Fatalf("service client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Stop shuts the hub down and waits for it. It is safe to call twice.
func (h *Hub) Stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		panic("hubtest: hub did not stop within 30s")
	}
}

// Eventually polls cond until it is true or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testWriter sends log output to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
