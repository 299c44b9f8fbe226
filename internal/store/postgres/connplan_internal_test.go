package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/herd-iot/herd/internal/store/pgtest"
)

// The batches that write listed devices joined from arrays (connection
// changes and activity, sessions) look each device up in the primary key
// whatever the batch's share of the fleet: joined by hashing or merging,
// every batch read the whole devices table, and a larger fleet paid more
// per device.
func TestDeviceBatchPlansUseThePrimaryKey(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 100_000
	insertDevices(t, db, n)
	if _, err := db.pool.Exec(ctx, `ANALYZE devices`); err != nil {
		t.Fatal(err)
	}
	// Batches of 5 % and 20 % of the fleet: without keyedPlanningSQL the
	// planner merges the first with the whole primary key and hashes the
	// whole table for the second.
	for _, k := range []int{n / 20, n / 5} {
		ids := make([]string, k)
		for i := range ids {
			ids[i] = fmt.Sprintf("d-%06d", 1+i*(n/k))
		}
		list := "'{" + strings.Join(ids, ",") + "}'"
		fill := func(v, typ string) string { return fmt.Sprintf("array_fill(%s::%s, ARRAY[%d])", v, typ, k) }
		at, null, zero := fill("'2026-12-07T09:00:00Z'", "text"), fill("NULL", "text"), fill("0", "bigint")
		for _, tc := range []struct{ name, sql, types, args string }{
			{"connection changes", deviceConnectionsSQL, "text[], text[], text[], text[], text[], bigint[]",
				strings.Join([]string{list, null, null, null, at, zero}, ", ")},
			{"activity", deviceActivitySQL, "text[], text[]", list + ", " + at},
			{"session upserts", saveSessionsSQL, "text[], int[], bigint[]", list + ", " + fill("1", "int") + ", " + zero},
			{"session deletes", deleteSessionsSQL, "text[], bigint[]", list + ", " + zero},
		} {
			t.Run(fmt.Sprintf("%s, %d devices", tc.name, k), func(t *testing.T) {
				plan := explainPrepared(t, db, tc.sql, tc.types, tc.args, keyedPlanningSQL)
				if !strings.Contains(plan, "Scan using devices_pkey on devices d") { // an Index Scan or an Index Only Scan
					t.Errorf("%s does not look its devices up in the primary key:\n%s", tc.name, plan)
				}
				for _, bad := range []string{"Seq Scan on devices", "Hash Join", "Hash Semi Join", "Merge Join", "Merge Semi Join", "JIT"} {
					if strings.Contains(plan, bad) {
						t.Errorf("%s plans badly (%s):\n%s", tc.name, bad, plan)
					}
				}
			})
		}
	}
}
