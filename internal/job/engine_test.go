package job_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/store/storetest"
	"github.com/herd-iot/herd/internal/twin"
)

var t0 = time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)

// fleet is a fake set of devices for method jobs.
type fleet struct {
	mu      sync.Mutex
	online  map[string]bool
	waiters map[string][]chan struct{}
	calls   map[string]int
	// hold, if set, makes Invoke wait until it is closed (or ctx ends).
	hold chan struct{}
	// gate, if set, makes each Invoke wait for one value from it (or ctx),
	// so that a test releases calls one at a time.
	gate chan struct{}
	// inFlight and maxInFlight count concurrent Invoke calls.
	inFlight, maxInFlight int
}

func newFleet() *fleet {
	return &fleet{online: map[string]bool{}, waiters: map[string][]chan struct{}{}, calls: map[string]int{}}
}

func (f *fleet) connect(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		f.online[id] = true
		for _, w := range f.waiters[id] {
			close(w)
		}
		delete(f.waiters, id)
	}
}

func (f *fleet) Online(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.online[id]
}

func (f *fleet) WaitOnline(ctx context.Context, id string) error {
	f.mu.Lock()
	if f.online[id] {
		f.mu.Unlock()
		return nil
	}
	w := make(chan struct{})
	f.waiters[id] = append(f.waiters[id], w)
	f.mu.Unlock()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fleet) Invoke(ctx context.Context, id string, req herd.MethodRequest) (*herd.MethodResult, error) {
	f.mu.Lock()
	f.calls[id]++
	online := f.online[id]
	hold, gate := f.hold, f.gate
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if !online {
		return nil, herd.Errorf(herd.ErrDeviceNotOnline, "Timed out waiting for device to connect.")
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if id == "silent" {
		return nil, herd.Errorf(herd.ErrGatewayTimeout, "Timed out waiting for the response from device.")
	}
	if strings.HasPrefix(id, "flaky") && f.callCount(id) == 1 { // the first call fails
		return &herd.MethodResult{Status: 503, Payload: json.RawMessage(`{"error":"busy"}`)}, nil
	}
	if strings.HasPrefix(id, "bad") { // answers, with an error status
		return &herd.MethodResult{Status: 500, Payload: json.RawMessage(`{"error":"broken"}`)}, nil
	}
	return &herd.MethodResult{Status: 200, Payload: json.RawMessage(fmt.Sprintf(`{"device":%q,"method":%q}`, id, req.MethodName))}, nil
}

func (f *fleet) callCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

// notes records desired notifications.
type notes struct {
	mu   sync.Mutex
	sent map[string][]string
}

func (n *notes) Notify(id string, _ twin.Where, version int64, body []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sent == nil {
		n.sent = map[string][]string{}
	}
	n.sent[id] = append(n.sent[id], fmt.Sprintf("%d %s", version, body))
}

func (n *notes) of(id string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.sent[id]...)
}

// env is a job service over a temp-file SQLite store.
type env struct {
	t     *testing.T
	db    storetest.Store
	path  string // the --store value ("" for SQLite in dir)
	dir   string
	clock *clock.Fake
	fleet *fleet
	notes *notes
	svc   *job.Service
	stop  func()
	// halt ends the engine's context without waiting for Run (stop
	// waits).
	halt func()
}

type option func(*job.Config)

func newEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	dir := t.TempDir()
	// The store the job tests run on: SQLite in dir, or PostgreSQL
	// (HERD_TEST_STORE=postgres, as make test runs them too).
	path := hubtest.StoreFor(t, dir)
	e := &env{t: t, path: path, dir: dir, clock: clock.NewFake(t0), fleet: newFleet(), notes: &notes{}}
	e.open(opts...)
	return e
}

// open opens the store and starts an engine on it.
func (e *env) open(opts ...option) {
	t := e.t
	st, err := store.Open(context.Background(), e.path, e.dir)
	if err != nil {
		t.Fatal(err)
	}
	db := st.(storetest.Store)
	e.db = db
	cfg := job.Config{Store: db, Twins: e.notes, Methods: e.fleet, Clock: e.clock, ProgressClock: e.clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), TwinBatch: 3}
	for _, o := range opts {
		o(&cfg)
	}
	e.svc = job.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.svc.Run(ctx) }()
	e.halt = cancel
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		db.Close()
	}
	t.Cleanup(e.stop)
}

func (e *env) devices(ids ...string) {
	e.t.Helper()
	ops := make([]registry.Op, len(ids))
	for i, id := range ids {
		ops[i] = registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: twin.NewDoc(t0), Device: &herd.Device{
			DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled,
			Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()}},
		}}
	}
	res, err := e.db.ApplyDevices(context.Background(), ops)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			e.t.Fatal(r.Err)
		}
	}
}

func (e *env) create(id, body string) *herd.Job {
	e.t.Helper()
	j, err := e.svc.Create(context.Background(), id, []byte(body), nil)
	if err != nil {
		e.t.Fatalf("create %s: %v", id, err)
	}
	return j
}

func (e *env) get(id string) *herd.Job {
	e.t.Helper()
	j, err := e.svc.Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	st := j.DeviceJobStatistics
	if st.DeviceCount != st.SucceededCount+st.FailedCount+st.RunningCount+st.PendingCount {
		e.t.Errorf("job %s statistics do not add up: %+v", id, *st)
	}
	return j
}

// waitFor polls until the job satisfies cond.
func (e *env) waitFor(id, what string, cond func(*herd.Job) bool) *herd.Job {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		j := e.get(id)
		if cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s is not %s: %+v %+v", id, what, j, j.DeviceJobStatistics)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) waitEnded(id string) *herd.Job {
	e.t.Helper()
	return e.waitFor(id, "ended", func(j *herd.Job) bool { return j.EndTime != nil })
}

// waitEndedAdvancing polls until the job has ended, advancing the fake
// clock a second at a time through the pauses between a batch's attempts.
func (e *env) waitEndedAdvancing(id string) *herd.Job {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for e.get(id).EndTime == nil {
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s did not end: %+v", id, stats(e.get(id)))
		}
		e.clock.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	return e.get(id)
}

func (e *env) records(id string) map[string]herd.DeviceJob {
	e.t.Helper()
	djs, err := e.db.DeviceJobs(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]herd.DeviceJob{}
	for _, d := range djs {
		out[d.DeviceID] = d
	}
	return out
}

func stats(j *herd.Job) herd.DeviceJobStatistics { return *j.DeviceJobStatistics }

// failingActive fails ActiveJobs while fails is above zero.
type failingActive struct {
	job.Store
	fails atomic.Int32
}

func (f *failingActive) ActiveJobs(ctx context.Context) ([]*job.Record, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, errors.New("the store is restarting")
	}
	return f.Store.ActiveJobs(ctx)
}

// TestRecoveryTriedAgain: a store that fails the engine's start-up
// recovery (PostgreSQL restarting as the hub starts) does not end the
// engine: the recovery is tried again after a pause, and jobs then run.
func TestRecoveryTriedAgain(t *testing.T) {
	flaky := &failingActive{}
	flaky.fails.Store(2)
	e := newEnv(t, func(c *job.Config) {
		flaky.Store = c.Store
		c.Store = flaky
	})
	e.devices("a", "b")
	e.create("after-restart", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"x":1}}}`)
	// Each failed attempt waits a pause on the engine's clock.
	j := e.waitEndedAdvancing("after-restart")
	if j.Status != herd.JobCompleted || j.DeviceJobStatistics.SucceededCount != 2 {
		t.Fatalf("the job after the failed recoveries: %s %+v", j.Status, *j.DeviceJobStatistics)
	}
	if n := flaky.fails.Load(); n >= 0 {
		t.Fatalf("the recovery was not tried after its failures (%d left)", n)
	}
}
