package config_test

import (
	"testing"

	"github.com/herd-iot/herd/internal/store/pgtest"
)

// TestMain stops the shared throwaway PostgreSQL that the test hubs use
// under HERD_TEST_STORE=postgres.
func TestMain(m *testing.M) { pgtest.Main(m) }
