//go:build !linux

package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"
)

// This file stands in for pgtest.go on systems other than Linux, where the
// throwaway server (credentials, parent-death signal) is not built.

var errNotLinux = errors.New("the throwaway PostgreSQL of internal/store/pgtest runs on Linux only")

// Server is a running throwaway cluster (Linux only).
type Server struct{}

// Unavailable skips the test (or, with CI=true, fails it).
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL is required in CI: %v", err)
	}
	t.Skipf("PostgreSQL not available: %v", err)
}

// Shared fails: no server on this system.
func Shared() (*Server, error) { return nil, errNotLinux }

// Start fails: no server on this system.
func Start() (*Server, error) { return nil, errNotLinux }

// StartWith fails: no server on this system.
func StartWith(...string) (*Server, error) { return nil, errNotLinux }

// AdminURL is empty.
func (*Server) AdminURL() string { return "" }

// Main runs the tests.
func Main(m *testing.M) { os.Exit(m.Run()) }

// URL skips the test.
func URL(t testing.TB) string {
	t.Helper()
	Unavailable(t, errNotLinux)
	return ""
}

// CreateDatabase fails.
func (*Server) CreateDatabase(context.Context) (string, error) { return "", errNotLinux }

// DatabaseURL is empty.
func (*Server) DatabaseURL(string) string { return "" }

// Stop does nothing.
func (*Server) Stop() {}
