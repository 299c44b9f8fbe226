//go:build linux

// Package pgtest runs a throwaway PostgreSQL server for tests, from the
// system's PostgreSQL binaries (Debian's postgresql package puts them in
// /usr/lib/postgresql/<version>/bin): a cluster made with initdb in a
// temporary folder, listening only on a unix socket there, with fsync off.
// PostgreSQL refuses to run as root, so as root the server runs as the
// postgres user (or a herdtest user the package creates). Each test gets a
// database of its own.
//
// With CI=true a missing PostgreSQL fails the test instead of skipping it:
// CI never passes by skipping.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running throwaway cluster.
type Server struct {
	dir    string // data folder and socket folder
	port   int
	user   string // the database superuser
	cmd    *exec.Cmd
	exited chan struct{}
	dbs    atomic.Int64
}

var (
	once     sync.Once
	shared   *Server
	startErr error
)

// BinDir finds the PostgreSQL server binaries: $HERD_PG_BIN, else the
// newest /usr/lib/postgresql/*/bin, else the folder of initdb on $PATH.
func BinDir() (string, error) {
	if d := os.Getenv("HERD_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries: install Debian's postgresql package (`make test` does, as root) or set HERD_PG_BIN")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Unavailable skips the test (or, with CI=true, fails it) with the reason
// PostgreSQL cannot be used here.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL is required in CI: %v", err)
	}
	t.Skipf("PostgreSQL not available: %v", err)
}

// Shared returns the package's server, started on first use and stopped
// when the test binary exits (Main) or, at the latest, when this process
// dies (the server gets SIGKILL then).
func Shared() (*Server, error) {
	once.Do(func() { shared, startErr = start() })
	return shared, startErr
}

// Main runs the tests of a package that uses the shared server and stops
// it afterwards: call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	os.Exit(code)
}

// URL returns the URL of a new, empty database for one test; it is
// dropped when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	s, err := Shared()
	if err != nil {
		Unavailable(t, err)
	}
	name, err := s.CreateDatabase(context.Background())
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return s.url(name)
}

// Start starts a server of the caller's own (pgtestd; tests use Shared).
func Start() (*Server, error) { return start() }

// StartWith starts a server of the caller's own with settings
// ("name=value", as postgres -c takes them) over the throwaway defaults:
// the benchmarks turn fsync and synchronous commits back on and give the
// server memory.
func StartWith(settings ...string) (*Server, error) { return start(settings...) }

// CreateDatabase creates a new, empty database and returns its name.
func (s *Server) CreateDatabase(ctx context.Context) (string, error) {
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), s.dbs.Add(1))
	return name, s.exec(ctx, "CREATE DATABASE "+name)
}

// DatabaseURL is the URL of the named database of the server.
func (s *Server) DatabaseURL(name string) string { return s.url(name) }

// url is a database's URL: the unix socket in the server's folder.
func (s *Server) url(db string) string {
	q := url.Values{"host": {s.dir}, "port": {strconv.Itoa(s.port)}, "sslmode": {"disable"}}
	return "postgres://" + url.PathEscape(s.user) + "@/" + db + "?" + q.Encode()
}

// AdminURL is the URL of the server's postgres database.
func (s *Server) AdminURL() string { return s.url("postgres") }

func (s *Server) exec(ctx context.Context, sql string) error {
	c, err := pgx.Connect(ctx, s.AdminURL())
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

// Stop stops the server and removes its folder.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	os.RemoveAll(s.dir)
}

// Kill stops the server at once, as a crash would (for tests of a store
// whose database goes away); Restart brings it back on the same data.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// ownerFile names the process that started a server, so that a later run
// removes the folders of servers whose owner died without stopping them
// (the server itself gets SIGKILL when its owner dies).
const ownerFile = "owner.pid"

// removeStale removes server folders left by processes that are gone.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "herd-pg-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

func start(settings ...string) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	removeStale()
	dir, err := os.MkdirTemp("", "herd-pg-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{dir: dir, port: 5432}
	cred, name, err := runAs()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.user = name
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", name, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	// Listen on the socket only; settings for a throwaway server.
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-c", "listen_addresses=",
		"-c", "port="+strconv.Itoa(s.port), "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=256MB")
	for _, kv := range settings { // a later -c wins
		s.cmd.Args = append(s.cmd.Args, "-c", kv)
	}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	s.cmd.Dir = dir
	var logs bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &logs, &logs
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.exec(ctx, "SELECT 1")
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("postgres exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("postgres did not start: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart starts the server again on its data (after Kill).
func (s *Server) Restart() error {
	next := exec.Command(s.cmd.Path, s.cmd.Args[1:]...)
	next.SysProcAttr, next.Dir = s.cmd.SysProcAttr, s.cmd.Dir
	var logs bytes.Buffer
	next.Stdout, next.Stderr = &logs, &logs
	if err := next.Start(); err != nil {
		return err
	}
	s.cmd, s.exited = next, make(chan struct{})
	go func() { next.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.exec(ctx, "SELECT 1")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not restart: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runAs is who the server runs as: the current user, or (as root, which
// PostgreSQL refuses) the postgres user, else a herdtest user made for it.
func runAs() (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return nil, "", err
		}
		return nil, u.Username, nil
	}
	for _, name := range []string{"postgres", "herdtest"} {
		if u, err := user.Lookup(name); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, name, nil
		}
	}
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "herdtest").CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("as root, PostgreSQL needs a user to run as; useradd herdtest: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return runAs()
}
