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
	node := func(id string) *postgres.DB {
		db, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := db.Join(ctx, id); err != nil {
			t.Fatal(err)
		}
		return db
	}
	db, dbB := node("node-a"), node("node-b")
	var ops []registry.Op
	for _, id := range []string{"d1", "d2", "d3", "d4", "d5", "d6"} {
		ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Twin: twin.NewDoc(t0), Device: &herd.Device{
			DeviceID: id, GenerationID: "1", Status: herd.DeviceEnabled,
			Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()}},
		}})
	}
	if _, err := db.ApplyDevices(ctx, ops); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(t0)
	const lease = 3 * time.Second
	engine := func(db *postgres.DB, node string, leases job.Leases, f *fleet) (*job.Service, func()) {
		svc := job.New(job.Config{Store: db, Methods: f, Clock: clk, ProgressClock: clk, Leases: leases, NodeID: node, Lease: lease,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- svc.Run(rctx) }()
		return svc, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: Run: %v", node, err)
			}
		}
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
