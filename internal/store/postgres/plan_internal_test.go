package postgres

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd"
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
	insertDevices(t, db, n)
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

// insertDevices inserts n disconnected devices d-000001 … with empty
// twins, straight into the table.
func insertDevices(t *testing.T, db *DB, n int) {
	t.Helper()
	if _, err := db.pool.Exec(context.Background(), `INSERT INTO devices (device_id, generation_id, etag, status, status_updated_time,
		auth_type, primary_key, secondary_key, iot_edge, device_scope, parent_scopes, connection_state,
		connection_state_updated_time, last_activity_time, c2d_message_count, twin_etag, twin_version, tags, desired,
		desired_version, desired_metadata, reported, reported_version, reported_metadata)
		SELECT 'd-' || lpad(g::text, 6, '0'), 'g', 1, 'enabled', '', 'sas', 'k', 'k', false, '', '[]', 'Disconnected',
		'', '', 0, 1, 1, '{}', '{}', 1, '{}', '{}', 1, '{}' FROM generate_series(1, $1) g`, n); err != nil {
		t.Fatal(err)
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
	plan := planText(t, rows, err)
	if !strings.Contains(plan, "devices_connected_node") {
		t.Errorf("the sweep does not use the index of connected devices by node:\n%s", plan)
	}
	if n, err := db.DisconnectNode(ctx, "node-3", time.Now()); err != nil || n != 43 {
		t.Errorf("DisconnectNode: %d %v, want the 43 connected devices of node-3", n, err)
	}
}

// A method job's batch statements find their records through the primary
// key however stale the statistics of device_jobs are. The last ANALYZE
// (StartJob's) saw every record of the job pending; half of them are
// done since. Planned with their values and those statistics, the claim
// and the outcomes read every record of the job through a bitmap scan for
// each batch, and the page of due devices read every remaining one and
// sorted them: quadratic in the job's size.
func TestMethodBatchPlansUseThePrimaryKey(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 10 * analyzeAfter
	insertDevices(t, db, n)
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	every, err := query.ParseCondition("*")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"earlier-1", "earlier-2", "current"} {
		r, err := job.ParseRequest(id, []byte(`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor"}}`), now)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CreateJob(ctx, r); err != nil {
			t.Fatal(err)
		}
		if _, err := db.StartJob(ctx, id, every, now); err != nil {
			t.Fatal(err)
		}
		if id != "current" {
			if _, err := db.pool.Exec(ctx, `UPDATE device_jobs SET status = 'completed' WHERE job_id = $1`, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first half of the current job runs through the store.
	ids := func(from, count int) []string {
		out := make([]string, count)
		for i := range out {
			out[i] = fmt.Sprintf("d-%06d", from+i)
		}
		return out
	}
	for from := 1; from <= n/2; from += 1000 {
		claimed, err := db.ClaimDevices(ctx, "current", ids(from, 1000), now)
		if err != nil || len(claimed) != 1000 {
			t.Fatalf("claim: %d devices, %v", len(claimed), err)
		}
		outcomes := make([]job.Outcome, len(claimed))
		for i, d := range claimed {
			outcomes[i] = job.Outcome{DeviceID: d, Status: herd.DeviceJobCompleted, Response: &herd.MethodResult{Status: 200}}
		}
		if err := db.FinishDevices(ctx, "current", outcomes, now); err != nil {
			t.Fatal(err)
		}
	}
	list := func(ids []string) string { return "'{" + strings.Join(ids, ",") + "}'" }
	next := list(ids(n/2+1, 1000))
	at := "'" + stamp(now) + "'"
	for _, tc := range []struct {
		name, sql, types, args string
		// set (with setArgs) prepares the transaction as the store
		// does: "" for a statement of the pool (planned with its values
		// first).
		set     string
		setArgs []any
	}{
		{"claim", claimSQL, "text, text, text[]", at + ", 'current', " + next, lockRunningSQL, []any{"current"}},
		{"outcomes", fmt.Sprintf(finishCountedSQL, "running_count", "succeeded_count"), "text, text, text[], text[], text[], text[], text, text, text[]",
			"'completed', " + at + ", " + next + ", " + next + ", NULL, NULL, 'current', 'running', NULL", outcomePlanningSQL, nil},
		{"due, planned with its values", dueSQL, "text, text, text, int, int", fmt.Sprintf("'current', 'd-%06d', %s, 1000, 0", n/2, at), "", nil},
		{"due, generic plan", dueSQL, "text, text, text, int, int", fmt.Sprintf("'current', 'd-%06d', %s, 1000, 0", n/2, at),
			`SET LOCAL plan_cache_mode = force_generic_plan`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := explainPrepared(t, db, tc.sql, tc.types, tc.args, tc.set, tc.setArgs...)
			// Through the primary key by job and device (a bitmap of
			// the listed devices is fine), never the job's every record.
			if !byJobAndDevice.MatchString(plan) {
				t.Errorf("%s does not find its records by job and device:\n%s", tc.name, plan)
			}
			// "JIT": a plan whose cost makes PostgreSQL compile it at
			// every execution (the cost of a nested loop that
			// enable_nestloop turned off, say) spends more time
			// compiling than running.
			for _, bad := range []string{"Seq Scan on device_jobs", "Sort", "JIT"} {
				if strings.Contains(plan, bad) {
					t.Errorf("%s plans badly (%s):\n%s", tc.name, bad, plan)
				}
			}
		})
	}
}

// byJobAndDevice matches a plan's lookup of device_jobs by its primary key,
// job and device.
var byJobAndDevice = regexp.MustCompile(`Index Cond: \(\(job_id = [^)]*\) AND \(device_id `)

// explainPrepared returns the plan of sql prepared with parameter types
// and executed with args (SQL literals), in a transaction that the
// statement set (if not "", with setArgs) prepares and that is rolled
// back.
func explainPrepared(t *testing.T, db *DB, sql, types, args, set string, setArgs ...any) string {
	t.Helper()
	ctx := context.Background()
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if set != "" {
		if _, err := tx.Exec(ctx, set, setArgs...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec(ctx, `PREPARE explained (`+types+`) AS `+sql); err != nil {
		t.Fatal(err)
	}
	// A prepared statement outlives the transaction.
	defer conn.Exec(ctx, `DEALLOCATE explained`)
	rows, err := tx.Query(ctx, `EXPLAIN EXECUTE explained (`+args+`)`)
	return planText(t, rows, err)
}

// planText reads the lines of an EXPLAIN (what Query returned) as one text.
func planText(t *testing.T, rows pgx.Rows, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
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
	return plan
}
