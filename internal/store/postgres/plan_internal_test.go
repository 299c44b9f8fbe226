package postgres

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/store/pgtest"
)

// After the snapshot of a large job the planner knows its pending records.
// With the statistics the table had before (here: every record of an
// earlier job completed, none pending) it would expect none, and on a
// large table read every remaining record of the job for each batch (a
// bitmap scan and a sort: quadratic in the job's size, 47 s instead of
// 17 s for a million-twin job); StartJob's ANALYZE of job_id and status
// is what prevents it.
func TestBatchPlansAfterALargeSnapshot(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 3 * analyzeAfter
	if _, err := db.pool.Exec(ctx, `INSERT INTO devices (device_id, generation_id, etag, status, status_updated_time,
		auth_type, primary_key, secondary_key, iot_edge, device_scope, parent_scopes, connection_state,
		connection_state_updated_time, last_activity_time, c2d_message_count, twin_etag, twin_version, tags, desired,
		desired_version, desired_metadata, reported, reported_version, reported_metadata)
		SELECT 'd-' || lpad(g::text, 6, '0'), 'g', 1, 'enabled', '', 'sas', 'k', 'k', false, '', '[]', 'Disconnected',
		'', '', 0, 1, 1, '{}', '{}', 1, '{}', '{}', 1, '{}' FROM generate_series(1, $1) g`, n); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	start := func(id string) {
		t.Helper()
		r, err := job.ParseRequest(id, []byte(`{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}}}`), now)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CreateJob(ctx, r); err != nil {
			t.Fatal(err)
		}
		every, err := query.ParseCondition("*")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.StartJob(ctx, id, every, now); err != nil {
			t.Fatal(err)
		}
	}
	start("earlier")
	if _, err := db.pool.Exec(ctx, `UPDATE device_jobs SET status = 'completed'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, `ANALYZE device_jobs`); err != nil {
		t.Fatal(err)
	}
	start("next")
	// What the planner expects the batches to find: the job's pending
	// records, not none. (About n/2: it takes a job's share of the table
	// and the share of pending records to be independent.)
	var plan string
	if err := db.pool.QueryRow(ctx, `EXPLAIN SELECT device_id FROM device_jobs WHERE job_id = 'next' AND status = 'pending'`).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(` rows=(\d+) `).FindStringSubmatch(plan)
	if m == nil {
		t.Fatalf("no row estimate in %q", plan)
	}
	if rows, _ := strconv.Atoi(m[1]); rows < n/10 || rows > 2*n {
		t.Errorf("the planner expects %d pending records of the job's %d: %s", rows, n, plan)
	}
}

// The sweep of a lost node's devices (DisconnectNode, every few seconds on
// every node) reads the partial index of connected devices by node, not
// the devices table.
func TestDisconnectNodeUsesItsIndex(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.pool.Exec(ctx, `INSERT INTO devices (device_id, generation_id, etag, status, status_updated_time,
		auth_type, primary_key, secondary_key, iot_edge, device_scope, parent_scopes, connection_state,
		connection_state_updated_time, last_activity_time, c2d_message_count, twin_etag, twin_version, tags, desired,
		desired_version, desired_metadata, reported, reported_version, reported_metadata, conn_node)
		SELECT 'd-' || lpad(g::text, 6, '0'), 'g', 1, 'enabled', '', 'sas', 'k', 'k', false, '', '[]',
		CASE WHEN g % 100 = 0 THEN 'Connected' ELSE 'Disconnected' END,
		'', '', 0, 1, 1, '{}', '{}', 1, '{}', '{}', 1, '{}', 'node-' || (g % 7) FROM generate_series(1, 30000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, `ANALYZE devices`); err != nil {
		t.Fatal(err)
	}
	rows, err := db.pool.Query(ctx, `EXPLAIN UPDATE devices SET connection_state = 'Disconnected', connection_state_updated_time = $1
		WHERE connection_state = 'Connected' AND conn_node = $2`, "t", "node-3")
	if err != nil {
		t.Fatal(err)
	}
	var plan string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan += line + "\n"
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "devices_connected_node") {
		t.Errorf("the sweep does not use the index of connected devices by node:\n%s", plan)
	}
	if n, err := db.DisconnectNode(ctx, "node-3", time.Now()); err != nil || n != 43 {
		t.Errorf("DisconnectNode: %d %v, want the 43 connected devices of node-3", n, err)
	}
}
