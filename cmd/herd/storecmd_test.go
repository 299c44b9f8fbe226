package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/herd-iot/herd/internal/store/pgtest"
)

// TestStoreCopy: a hub built on SQLite with the CLI, copied with
// herd store copy to PostgreSQL, serves the same devices, twins, keys and
// job history from there; copying again is refused unless --force; the
// same store, a missing source and a bad target are refused with a
// message.
func TestStoreCopy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, stop := startServe(t, noEnv, "--data", dir, "--https-addr", "127.0.0.1:0")
	cli := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, noEnv, args...)
		if err != nil {
			t.Fatalf("herd %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	for _, id := range []string{"lock-1", "lock-2", "lock-3"} {
		cli("device", "create", id, "--data", dir)
	}
	cli("twin", "update", "lock-2", "--data", dir, "--tags", `{"building":43,"floor":{"n":2}}`, "--desired", `{"mode":"eco"}`)
	cli("job", "schedule-twin", "stamp", "--data", dir, "--query", "deviceId = 'lock-1'", "--tags", `{"stamped":true}`, "--wait")
	twinBefore := cli("twin", "show", "lock-2", "--data", dir)
	csBefore := cli("connection-string", "--data", dir, "--device", "lock-3")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	pg := pgtest.URL(t)
	out := cli("store", "copy", "--data", dir, "--to", pg)
	if !regexp.MustCompile(`copied 3 devices, 1 jobs \(1 device records\), 5 policies, 0 CA certificates`).MatchString(out) ||
		!strings.Contains(out, "to PostgreSQL postgres://") {
		t.Errorf("store copy output:\n%s", out)
	}

	// Again: refused, with the way out in the message.
	if out, err := runCLI(t, noEnv, "store", "copy", "--data", dir, "--to", pg); err == nil ||
		!strings.Contains(err.Error(), "not empty: it holds") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second copy: %v\n%s", err, out)
	}
	cli("store", "copy", "--data", dir, "--to", pg, "--force")

	// The hub on PostgreSQL serves what the SQLite hub held.
	_, stop = startServe(t, noEnv, "--data", dir, "--store", pg, "--https-addr", "127.0.0.1:0")
	local := []string{"--data", dir, "--store", pg}
	if got := cli(append([]string{"twin", "show", "lock-2"}, local...)...); got != twinBefore {
		t.Errorf("twin after the copy:\n%s\nbefore:\n%s", got, twinBefore)
	}
	key := regexp.MustCompile(`SharedAccessKey=[^;\s]+`)
	if got := cli(append([]string{"connection-string", "--device", "lock-3"}, local...)...); key.FindString(got) != key.FindString(csBefore) {
		t.Errorf("device connection string after the copy: %q, before %q", got, csBefore)
	}
	if got := cli(append([]string{"job", "show", "stamp"}, local...)...); !regexp.MustCompile(`Status:\s+completed`).MatchString(got) ||
		!strings.Contains(got, "succeeded 1") {
		t.Errorf("job after the copy:\n%s", got)
	}
	if got := cli(append([]string{"query", "SELECT deviceId FROM devices WHERE tags.stamped = true"}, local...)...); !strings.Contains(got, "lock-1") || strings.Contains(got, "lock-2") {
		t.Errorf("query after the copy:\n%s", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// And back to a new SQLite file.
	back := "sqlite:" + filepath.Join(t.TempDir(), "back.db")
	if out := cli("store", "copy", "--data", dir, "--from", pg, "--to", back); !strings.Contains(out, "copied 3 devices") {
		t.Errorf("copy back:\n%s", out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", pg, "--to", pg}, "name the same store"},
		{[]string{"--to", "sqlite:" + filepath.Join(dir, "herd.db")}, "name the same store"},
		{[]string{"--from", "sqlite:" + filepath.Join(dir, "nope.db"), "--to", back}, "no such database"},
		{[]string{"--to", "mysql://root:hunter2@db/herd"}, "use sqlite:PATH or a postgres://"},
		{[]string{}, "--to"},
	} {
		out, err := runCLI(t, noEnv, append([]string{"store", "copy", "--data", dir}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error()+out, "hunter2") {
			t.Errorf("store copy %v: %v\n%s; want an error with %q", c.args, err, out, c.want)
		}
	}
}

// TestServeOneHubPerDatabase: a second herd serve on a PostgreSQL database
// that a hub serves refuses to start, saying why; local readers work
// beside the hub; once the first hub stops, another may start.
func TestServeOneHubPerDatabase(t *testing.T) {
	pg := pgtest.URL(t)
	dir := filepath.Join(t.TempDir(), "data")
	out, stop := startServe(t, noEnv, "--data", dir, "--store", pg, "--https-addr", "127.0.0.1:0")
	if !strings.Contains(out.String(), "Store        PostgreSQL postgres://") {
		t.Errorf("the banner does not name the store:\n%s", out.String())
	}
	_, err := runCLI(t, noEnv, "serve", "--data", filepath.Join(t.TempDir(), "other"), "--store", pg,
		"--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "another hub is serving database") {
		t.Errorf("second hub on the same database: %v", err)
	}
	if cs, err := runCLI(t, noEnv, "connection-string", "--data", dir, "--store", pg); err != nil || !strings.Contains(cs, "SharedAccessKeyName=iothubowner") {
		t.Errorf("connection-string beside the hub: %v %s", err, cs)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, stop = startServe(t, noEnv, "--data", dir, "--store", pg, "--https-addr", "127.0.0.1:0")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
