package herd_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The public SDKs (device/, service/) and the packages they share (sas/,
// the root) must never depend on Herd's server internals or on a
// database driver (ARCHITECTURE.md, "Rules that keep it easy to change").
func TestSDKImports(t *testing.T) {
	forbidden := []string{
		"github.com/herd-iot/herd/internal/",
		"modernc.org/sqlite", "github.com/mattn/go-sqlite3",
		"github.com/jackc/pgx", "github.com/lib/pq", "database/sql",
	}
	// The examples are programs a user copies: public SDKs only.
	for _, pkg := range []string{"./device", "./service", "./sas", ".", "./examples/simdevice", "./examples/schedulejob"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}

// The hub takes its store as interfaces from cmd/herd (ARCHITECTURE.md,
// "Seams"): it must not import a store implementation, and the stores
// must not import the gateway, the REST API or the hub.
func TestStoreImports(t *testing.T) {
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"./internal/hub", []string{"github.com/herd-iot/herd/internal/store", "modernc.org/sqlite", "github.com/jackc/pgx"}},
		{"./internal/store/sqlite", []string{"github.com/herd-iot/herd/internal/gateway", "github.com/herd-iot/herd/internal/httpapi", "github.com/herd-iot/herd/internal/hub"}},
	}
	for _, r := range rules {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", r.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", r.pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range r.forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%s depends on %s", r.pkg, dep)
				}
			}
		}
	}
}
