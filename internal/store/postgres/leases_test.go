package postgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/internal/store/postgres"
	"github.com/herd-iot/herd/internal/twin"
)

// leaseFixture opens the database of url with devices ids and one job
// of body, named id.
func leaseFixture(t *testing.T, url string, t0 time.Time, id, body string, ids ...string) *postgres.DB {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var ops []registry.Op
	for _, d := range ids {
		ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: d, Twin: twin.NewDoc(t0),
			Device: &herd.Device{DeviceID: d, GenerationID: "1", Status: herd.DeviceEnabled,
				Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()}}}})
	}
	if _, err := db.ApplyDevices(ctx, ops); err != nil {
		t.Fatal(err)
	}
	r, err := job.ParseRequest(id, []byte(body), t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateJob(ctx, r); err != nil {
		t.Fatal(err)
	}
	return db
}

// joined opens the database of url as node id of a cluster (its session
// holds the node's lock until Close).
func joined(t *testing.T, url, id string) *postgres.DB {
	t.Helper()
	n, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Join(context.Background(), id); err != nil {
		t.Fatalf("%s joins: %v", id, err)
	}
	return n
}

// startTwinJob starts twin job id through st (all devices) and returns
// its patch.
func startTwinJob(t *testing.T, st job.Store, db *postgres.DB, id string, t0 time.Time) twin.Patch {
	t.Helper()
	every, err := query.ParseCondition("*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.StartJob(context.Background(), id, every, t0); err != nil {
		t.Fatal(err)
	}
	stored, err := db.Job(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := job.Patch(stored)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// desiredVersions checks the desired $version of twins ids after what.
func desiredVersions(t *testing.T, db *postgres.DB, what string, want int64, ids ...string) {
	t.Helper()
	for _, id := range ids {
		_, doc, err := db.Twin(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if doc.DesiredVersion != want {
			t.Fatalf("%s desired $version %d after %s, want %d", id, doc.DesiredVersion, what, want)
		}
	}
}

func deviceStatuses(t *testing.T, db *postgres.DB, id string) map[string]herd.DeviceJobStatus {
	t.Helper()
	djs, err := db.DeviceJobs(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]herd.DeviceJobStatus{}
	for _, d := range djs {
		out[d.DeviceID] = d.Status
	}
	return out
}

// TestJobLeaseFencesTheNodeThatLostIt: once node b takes the lease of a
// method job whose lease node a let lapse (a froze), every write of a
// about the job fails with ErrLeaseLost and changes nothing, a's renewal
// says the lease is lost, and b's writes go through. A lease that runs
// cannot be taken by another node; a released one can at once.
func TestJobLeaseFencesTheNodeThatLostIt(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	url := pgtest.URL(t)
	db := leaseFixture(t, url, t0, "lj", `{"type":"scheduleDeviceMethod","queryCondition":"*",
		"cloudToDeviceMethod":{"methodName":"lock","responseTimeoutInSeconds":30}}`, "d1", "d2", "d3")
	// Both nodes' sessions live: a's lease goes to b only once it lapses.
	a, b := joined(t, url, "node-a").JobLeases("node-a"), joined(t, url, "node-b").JobLeases("node-b")
	lease := 15 * time.Second

	ea, err := a.TakeJob(ctx, "lj", t0, t0.Add(lease))
	if err != nil || ea != 1 {
		t.Fatalf("a takes the lease: epoch %d, %v", ea, err)
	}
	if e, err := b.TakeJob(ctx, "lj", t0.Add(time.Second), t0.Add(time.Second+lease)); err != nil || e != 0 {
		t.Fatalf("b takes a lease a holds: epoch %d, %v; want 0", e, err)
	}
	fa := a.Fenced(ea)
	every, err := query.ParseCondition("*")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := fa.StartJob(ctx, "lj", every, t0); err != nil || r.Status != herd.JobRunning {
		t.Fatalf("a starts the job: %v %v", r, err)
	}
	if got, err := fa.ClaimDevices(ctx, "lj", []string{"d1"}, t0); err != nil || len(got) != 1 {
		t.Fatalf("a claims d1: %v %v", got, err)
	}
	r, err := db.Job(ctx, "lj")
	if err != nil {
		t.Fatal(err)
	}
	if r.Lease.Node != "node-a" || r.Lease.Epoch != 1 || !r.Lease.Until.Equal(t0.Add(lease)) {
		t.Fatalf("the job's lease: %+v", r.Lease)
	}

	// a freezes past its lease; b takes the job.
	late := t0.Add(lease + time.Second)
	eb, err := b.TakeJob(ctx, "lj", late, late.Add(lease))
	if err != nil || eb != 2 {
		t.Fatalf("b takes the lapsed lease: epoch %d, %v; want 2", eb, err)
	}
	lost, err := a.RenewJobs(ctx, map[string]int64{"lj": ea}, late.Add(lease))
	if err != nil || len(lost) != 1 || lost[0] != "lj" {
		t.Fatalf("a renews: lost %v, %v; want [lj]", lost, err)
	}
	before, err := db.Job(ctx, "lj")
	if err != nil {
		t.Fatal(err)
	}
	writes := map[string]func() error{
		"claim": func() error { _, err := fa.ClaimDevices(ctx, "lj", []string{"d2"}, late); return err },
		"outcomes": func() error {
			return fa.FinishDevices(ctx, "lj", []job.Outcome{{DeviceID: "d1", Status: herd.DeviceJobCompleted,
				Response: &herd.MethodResult{Status: 200}}}, late)
		},
		"outcomes with a retry": func() error {
			return fa.FinishDevices(ctx, "lj", []job.Outcome{{DeviceID: "d1", Status: herd.DeviceJobFailed,
				Error: &herd.DeviceJobError{Code: "x", Description: "y"}, RetryAt: late.Add(time.Minute)}}, late)
		},
		"interrupt": func() error {
			_, err := fa.InterruptRunning(ctx, "lj", herd.DeviceJobError{Code: "x", Description: "y"}, late)
			return err
		},
		"expire": func() error {
			return fa.ExpireJob(ctx, "lj", herd.JobFailed, "late", herd.DeviceJobError{Code: "x", Description: "y"}, late)
		},
		"fail":    func() error { return fa.FailJob(ctx, "lj", "no", late) },
		"abort":   func() error { _, err := fa.AbortJob(ctx, "lj", "no", late); return err },
		"wave":    func() error { _, err := fa.AdvanceWave(ctx, "lj", 1, true, late); return err },
		"add":     func() error { _, err := fa.AddDevices(ctx, "lj", every, []string{"d3"}, late); return err },
		"restart": func() error { _, err := fa.StartJob(ctx, "lj", every, late); return err },
	}
	for name, w := range writes {
		if err := w(); !errors.Is(err, job.ErrLeaseLost) {
			t.Errorf("a's %s after b took the lease: %v, want ErrLeaseLost", name, err)
		}
	}
	after, err := db.Job(ctx, "lj")
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != herd.JobRunning || *after.DeviceJobStatistics != *before.DeviceJobStatistics || after.Wave != before.Wave || after.EndTime != nil {
		t.Fatalf("a's refused writes changed the job: %s %+v wave %d, before %+v", after.Status, *after.DeviceJobStatistics, after.Wave, *before.DeviceJobStatistics)
	}
	if st := deviceStatuses(t, db, "lj"); st["d1"] != herd.DeviceJobRunning || st["d2"] != herd.DeviceJobPending {
		t.Fatalf("a's refused writes changed the devices: %v", st)
	}

	// b recovers what a had in flight and goes on.
	fb := b.Fenced(eb)
	if n, err := fb.InterruptRunning(ctx, "lj", herd.DeviceJobError{Code: job.ErrCodeInterrupted, Description: "lost"}, late); err != nil || n != 1 {
		t.Fatalf("b interrupts a's call: %d, %v", n, err)
	}
	if got, err := fb.ClaimDevices(ctx, "lj", []string{"d2", "d3"}, late); err != nil || len(got) != 2 {
		t.Fatalf("b claims: %v %v", got, err)
	}
	if err := fb.FinishDevices(ctx, "lj", []job.Outcome{{DeviceID: "d2", Status: herd.DeviceJobCompleted,
		Response: &herd.MethodResult{Status: 200}}}, late); err != nil {
		t.Fatal(err)
	}
	if e, err := a.TakeJob(ctx, "lj", late, late.Add(lease)); err != nil || e != 0 {
		t.Fatalf("a takes the lease b holds: epoch %d, %v; want 0", e, err)
	}
	if lost, err := b.RenewJobs(ctx, map[string]int64{"lj": eb}, late.Add(2*lease)); err != nil || len(lost) != 0 {
		t.Fatalf("b renews: lost %v, %v", lost, err)
	}
	if err := b.ReleaseJob(ctx, "lj", eb); err != nil {
		t.Fatal(err)
	}
	if e, err := a.TakeJob(ctx, "lj", late, late.Add(lease)); err != nil || e != 3 {
		t.Fatalf("a takes the lease b released: epoch %d, %v; want 3", e, err)
	}
	if st := deviceStatuses(t, db, "lj"); st["d1"] != herd.DeviceJobFailed || st["d2"] != herd.DeviceJobCompleted || st["d3"] != herd.DeviceJobRunning {
		t.Fatalf("devices after b's writes: %v", st)
	}
}

// TestJobLeaseFencesATwinBatch: a twin batch of a node whose lease was
// taken is rolled back whole (no twin patched, no record completed), and
// the new holder's batch patches each twin once.
func TestJobLeaseFencesATwinBatch(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	db := leaseFixture(t, pgtest.URL(t), t0, "tj", `{"type":"scheduleUpdateTwin","queryCondition":"*",
		"updateTwin":{"etag":"*","properties":{"desired":{"on":true}}}}`, "t1", "t2")
	a, b := db.JobLeases("node-a"), db.JobLeases("node-b")
	lease := 15 * time.Second
	ea, err := a.TakeJob(ctx, "tj", t0, t0.Add(lease))
	if err != nil || ea == 0 {
		t.Fatalf("a takes: %d %v", ea, err)
	}
	p := startTwinJob(t, a.Fenced(ea), db, "tj", t0)
	late := t0.Add(2 * lease)
	eb, err := b.TakeJob(ctx, "tj", late, late.Add(lease))
	if err != nil || eb == 0 {
		t.Fatalf("b takes: %d %v", eb, err)
	}
	if _, err := a.Fenced(ea).ApplyTwinBatch(ctx, "tj", p, "", 10, late); !errors.Is(err, job.ErrLeaseLost) {
		t.Fatalf("a's twin batch after b took the lease: %v, want ErrLeaseLost", err)
	}
	desiredVersions(t, db, "a's refused batch", 1, "t1", "t2")
	if st := deviceStatuses(t, db, "tj"); st["t1"] != herd.DeviceJobPending || st["t2"] != herd.DeviceJobPending {
		t.Fatalf("a's refused batch changed the records: %v", st)
	}
	res, err := b.Fenced(eb).ApplyTwinBatch(ctx, "tj", p, "", 10, late)
	if err != nil || len(res.Updated) != 2 {
		t.Fatalf("b's batch: %+v %v", res, err)
	}
	desiredVersions(t, db, "b's batch", 2, "t1", "t2")
	if j, err := db.Job(ctx, "tj"); err != nil || j.Status != herd.JobCompleted {
		t.Fatalf("the twin job after b's batch: %v %v", j, err)
	}
}

// TestJobLeaseOfAGoneNode: a job whose holder's database session ended
// (the node was killed) is taken at once, before its lease lapses; one
// whose holder's session lives is not. A second node with the same id is
// refused.
func TestJobLeaseOfAGoneNode(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	url := pgtest.URL(t)
	leaseFixture(t, url, t0, "gone", `{"type":"scheduleUpdateTwin","queryCondition":"*",
		"updateTwin":{"etag":"*","tags":{"x":1}}}`, "g1")
	a, b := joined(t, url, "node-a"), joined(t, url, "node-b")
	if e, err := a.JobLeases("node-a").TakeJob(ctx, "gone", t0, t0.Add(time.Hour)); err != nil || e != 1 {
		t.Fatalf("a takes: %d %v", e, err)
	}
	if e, err := b.JobLeases("node-b").TakeJob(ctx, "gone", t0.Add(time.Second), t0.Add(time.Hour)); err != nil || e != 0 {
		t.Fatalf("b takes the job of a, which is alive: epoch %d, %v; want 0", e, err)
	}
	twin, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer twin.Close()
	if err := twin.Join(ctx, "node-a"); err == nil || !strings.Contains(err.Error(), "another node with id") {
		t.Fatalf("a second node-a joins: %v", err)
	}
	// Its session, and its node lock, end once the server has seen the
	// connection close (a moment after Close returns): b tries again, as
	// the engine does every third of a lease.
	a.Close()
	var e int64
	for deadline := time.Now().Add(10 * time.Second); e == 0; time.Sleep(20 * time.Millisecond) {
		if e, err = b.JobLeases("node-b").TakeJob(ctx, "gone", t0.Add(2*time.Second), t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if e == 0 && time.Now().After(deadline) {
			t.Fatal("b does not take the job of a, which is gone, within 10 s")
		}
	}
	if e != 2 {
		t.Fatalf("b takes the job of a, which is gone: epoch %d, want 2", e)
	}
	// The same id starts again (a restart) once the old session is gone.
	if err := twin.Join(ctx, "node-a"); err != nil {
		t.Fatalf("node-a joins again after its session ended: %v", err)
	}
}
