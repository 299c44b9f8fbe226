package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/store/pgtest"
)

// TestTwinBatchOnceUnderTwoRunners: two runners of one twin job's batch
// at once (a node that lost the jobs' lock and has not noticed yet, and
// the node that took it over) patch each twin once. Both take their
// snapshots while a third transaction holds the twins' rows; before the
// batch locked its device records, the second runner, woken after the
// first committed, patched the twins again (desired $version 3).
func TestTwinBatchOnceUnderTwoRunners(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	ids := []string{"r1", "r2", "r3"}
	db := leaseFixture(t, url, t0, "race", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","properties":{"desired":{"on":true}}}}`, ids...)
	p := startTwinJob(t, db, db, "race", t0)

	holder, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	hold, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `SELECT 1 FROM devices WHERE device_id = ANY($1) FOR UPDATE`, ids); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := db.ApplyTwinBatch(ctx, "race", p, "", 10, t0)
			done <- err
		}()
	}
	// Both runners are in their batch's transaction, waiting for a lock
	// (asked on another connection: within a transaction the activity
	// view is a snapshot).
	watcher, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close(ctx)
	hubtest.Eventually(t, 20*time.Second, func() bool {
		var n int
		err := watcher.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n == 2
	}, "the two runners did not both wait for the held twins")
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		_, doc, err := db.Twin(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if doc.DesiredVersion != 2 {
			t.Errorf("%s: desired $version %d after one patch, want 2 (patched %d times)", id, doc.DesiredVersion, doc.DesiredVersion-1)
		}
	}
	j, err := db.Job(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	if s := j.DeviceJobStatistics; s == nil || s.SucceededCount != 3 || s.FailedCount != 0 || s.PendingCount != 0 {
		t.Errorf("statistics: %+v", s)
	}
}
