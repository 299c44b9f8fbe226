package job_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/internal/store/postgres"
	"github.com/herd-iot/herd/internal/twin"
)

// cutLeases are a node's leases whose renewals fail while cut is set: the
// node is cut off long enough for its leases to lapse.
type cutLeases struct {
	job.Leases
	cut atomic.Bool
}

func (c *cutLeases) RenewJobs(ctx context.Context, held map[string]int64, until time.Time) ([]string, error) {
	if c.cut.Load() {
		return nil, errors.New("cut off")
	}
	return c.Leases.RenewJobs(ctx, held, until)
}

// TestLeaseTakenOverMidJob: node a runs a method job (calls in flight,
// devices waiting to come online) and stops renewing its lease; once the
// lease lapses node b takes the job: it records a's calls in flight
// MethodInterrupted and runs the waiting devices. a's outcomes are
// refused (the records stay as b wrote them), a calls no device after
// the takeover, a's runner stops, and every device has one terminal
// record, each called at most once.
func TestLeaseTakenOverMidJob(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	// Each node on a session of its own, which holds its node lock: b
	// takes a's job only once a's lease lapses.
	db, dbB := joinedNode(t, url, "node-a"), joinedNode(t, url, "node-b")
	leaseDevices(t, db, "d1", "d2", "d3", "d4", "d5", "d6")
	clk := clock.NewFake(t0)
	engine := func(db *postgres.DB, node string, leases job.Leases, f *fleet) (*job.Service, func()) {
		return leasedEngine(t, db, clk, node, leases, f)
	}
	fa := newFleet()
	fa.connect("d1", "d2", "d3")
	fa.hold = make(chan struct{})
	la := &cutLeases{Leases: db.JobLeases("node-a")}
	a, stopA := engine(db, "node-a", la, fa)
	defer stopA()
	if _, err := a.Create(ctx, "moving", []byte(`{"type":"scheduleDeviceMethod","queryCondition":"*",
		"cloudToDeviceMethod":{"methodName":"lock","responseTimeoutInSeconds":30,"connectTimeoutInSeconds":300}}`), nil); err != nil {
		t.Fatal(err)
	}
	held := waitJob(t, db, "moving", "a running d1-d3", func(r *job.Record) bool {
		return r.Lease.Node == "node-a" && r.DeviceJobStatistics.RunningCount == 3
	})

	// a is cut off: its lease lapses, and b takes the job.
	la.cut.Store(true)
	for range 5 {
		clk.Advance(time.Second)
	}
	fb := newFleet()
	fb.connect("d1", "d2", "d3", "d4", "d5", "d6")
	_, stopB := engine(dbB, "node-b", dbB.JobLeases("node-b"), fb)
	defer stopB()
	r := waitJob(t, db, "moving", "completed by b", func(r *job.Record) bool { return r.EndTime != nil })
	if r.Status != herd.JobCompleted || r.Lease.Node != "node-b" || r.Lease.Epoch <= held.Lease.Epoch {
		t.Fatalf("the job after the takeover: %s, lease %+v", r.Status, r.Lease)
	}
	if st := *r.DeviceJobStatistics; st.SucceededCount != 3 || st.FailedCount != 3 {
		t.Fatalf("the job's counts: %+v", st)
	}

	// a's calls answer now, and the devices it waited for come online:
	// its outcomes are refused, it calls nothing more, and its runner
	// stops.
	close(fa.hold)
	fa.connect("d4", "d5", "d6")
	deadline := time.Now().Add(20 * time.Second)
	for a.Running() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a still runs the job b took over")
		}
		time.Sleep(5 * time.Millisecond)
	}
	djs, err := db.DeviceJobs(ctx, "moving")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range djs {
		inFlight := d.DeviceID <= "d3"
		switch {
		case inFlight && (d.Status != herd.DeviceJobFailed || d.Error == nil || d.Error.Code != job.ErrCodeInterrupted):
			t.Errorf("%s, in flight on a when b took over: %s %+v, want failed %s", d.DeviceID, d.Status, d.Error, job.ErrCodeInterrupted)
		case !inFlight && d.Status != herd.DeviceJobCompleted:
			t.Errorf("%s, waited for by a: %s %+v, want completed by b", d.DeviceID, d.Status, d.Error)
		}
		ca, cb := fa.callCount(d.DeviceID), fb.callCount(d.DeviceID)
		if inFlight && (ca != 1 || cb != 0) || !inFlight && (ca != 0 || cb != 1) {
			t.Errorf("%s called %d times by a and %d by b", d.DeviceID, ca, cb)
		}
	}
	if len(djs) != 6 {
		t.Errorf("%d device records, want 6", len(djs))
	}
}

// leaseLength is the job lease of the engines of these tests.
const leaseLength = 3 * time.Second

// joinedNode opens the database of url as node id of a cluster.
func joinedNode(t *testing.T, url, id string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Join(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	return db
}

// leaseDevices registers devices ids.
func leaseDevices(t *testing.T, db *postgres.DB, ids ...string) {
	t.Helper()
	var ops []registry.Op
	for _, id := range ids {
		ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: twin.NewDoc(t0), Device: &herd.Device{
			DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled,
			Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()}},
		}})
	}
	if _, err := db.ApplyDevices(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
}

// leasedEngine runs the engine of node on db with leases, until the
// returned stop.
func leasedEngine(t *testing.T, db *postgres.DB, clk *clock.Fake, node string, leases job.Leases, f *fleet) (*job.Service, func()) {
	t.Helper()
	svc := job.New(job.Config{Store: db, Methods: f, Clock: clk, ProgressClock: clk, Leases: leases, NodeID: node, Lease: leaseLength,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", node, err)
		}
	}
	t.Cleanup(stop)
	return svc, stop
}

// TestLeasedEngineSchedules: with leases, a job scheduled for later is
// taken and run at its start time, not at its creation; a paused job
// whose deadline passes is ended under a lease taken for that; and a job
// handed back by a node that stops is taken by another at once.
func TestLeasedEngineSchedules(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	db := joinedNode(t, url, "node-a")
	leaseDevices(t, db, "s1", "s2")
	clk := clock.NewFake(t0)
	f := newFleet()
	f.connect("s1")
	a, stopA := leasedEngine(t, db, clk, "node-a", db.JobLeases("node-a"), f)
	start := t0.Add(time.Hour).Format(time.RFC3339)
	if _, err := a.Create(ctx, "later", []byte(`{"type":"scheduleDeviceMethod","queryCondition":"deviceId = 's1'","startTime":"`+start+`",
		"cloudToDeviceMethod":{"methodName":"m","responseTimeoutInSeconds":30}}`), nil); err != nil {
		t.Fatal(err)
	}
	waitJob(t, db, "later", "scheduled, not leased", func(r *job.Record) bool { return r.Status == herd.JobScheduled && r.Lease.Node == "" })
	clk.Advance(time.Hour)
	// The lease is handed back just after the job's end is written.
	r := waitJob(t, db, "later", "completed, lease handed back", func(r *job.Record) bool { return r.EndTime != nil && !r.Lease.HeldAt(clk.Now()) })
	if r.Status != herd.JobCompleted || r.Lease.Node != "node-a" || f.callCount("s1") != 1 {
		t.Fatalf("the scheduled job: %s, lease %+v, s1 called %d times", r.Status, r.Lease, f.callCount("s1"))
	}

	// s2 is offline: the job waits for it, is paused, and its deadline
	// passes while it is paused.
	if _, err := a.Create(ctx, "paused", []byte(`{"type":"scheduleDeviceMethod","queryCondition":"deviceId = 's2'","maxExecutionTimeInSeconds":60,
		"cloudToDeviceMethod":{"methodName":"m","responseTimeoutInSeconds":30,"connectTimeoutInSeconds":300}}`), nil); err != nil {
		t.Fatal(err)
	}
	waitJob(t, db, "paused", "running", func(r *job.Record) bool { return r.Status == herd.JobRunning })
	if _, err := a.Pause(ctx, "paused", nil); err != nil {
		t.Fatal(err)
	}
	waitJob(t, db, "paused", "paused and handed back", func(r *job.Record) bool {
		return r.Status == herd.JobPaused && !r.Lease.HeldAt(clk.Now()) && a.Running() == 0
	})
	clk.Advance(61 * time.Second)
	r = waitJob(t, db, "paused", "ended at its deadline", func(r *job.Record) bool { return r.EndTime != nil })
	if r.Status != herd.JobFailed || r.DeviceJobStatistics.FailedCount != 1 {
		t.Fatalf("the paused job after its deadline: %s %+v", r.Status, *r.DeviceJobStatistics)
	}

	// A job that waits for s2 again; a stops and hands it back; b takes it
	// at once (its lease had not lapsed) and runs it once s2 connects.
	if _, err := a.Create(ctx, "handed", []byte(`{"type":"scheduleDeviceMethod","queryCondition":"deviceId = 's2'",
		"cloudToDeviceMethod":{"methodName":"m","responseTimeoutInSeconds":30,"connectTimeoutInSeconds":300}}`), nil); err != nil {
		t.Fatal(err)
	}
	held := waitJob(t, db, "handed", "run by a", func(r *job.Record) bool { return r.Lease.Node == "node-a" && a.Running() == 1 })
	stopA()
	dbB := joinedNode(t, url, "node-b")
	fb := newFleet()
	fb.connect("s2")
	leasedEngine(t, dbB, clk, "node-b", dbB.JobLeases("node-b"), fb)
	r = waitJob(t, db, "handed", "completed by b", func(r *job.Record) bool { return r.EndTime != nil })
	if r.Status != herd.JobCompleted || r.Lease.Node != "node-b" || r.Lease.Epoch <= held.Lease.Epoch || fb.callCount("s2") != 1 {
		t.Fatalf("the handed-back job: %s, lease %+v (a's %+v), s2 called %d times by b", r.Status, r.Lease, held.Lease, fb.callCount("s2"))
	}
}

// waitJob polls the store until job id satisfies cond.
func waitJob(t *testing.T, db job.Store, id, what string, cond func(*job.Record) bool) *job.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := db.Job(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is not %s: %s %+v lease %+v", id, what, r.Status, *r.DeviceJobStatistics, r.Lease)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
