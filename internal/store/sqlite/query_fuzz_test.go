package sqlite_test

import (
	"testing"

	"github.com/herd-iot/herd/internal/store/storetest"
)

// FuzzQuerySQL runs the conformance suite's query fuzzer on SQLite.
func FuzzQuerySQL(f *testing.F) { storetest.QueryFuzzer(f, openDB(f)) }
