package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/pgtest"
)

// An activity batch that races a device's delete: the batch finds the
// device, its insert into device_activity waits on the foreign key for
// the delete's lock, the delete commits, and the batch, refused by the
// foreign key, is sent again without the device.
func TestActivityRacingADelete(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	insertDevices(t, db, 2)
	del, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer del.Rollback(ctx)
	if _, err := del.Exec(ctx, `DELETE FROM devices WHERE device_id = 'd-000001'`); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	done := make(chan error, 1)
	go func() {
		done <- db.SetConnectionStates(ctx, []registry.ConnectionChange{
			{DeviceID: "d-000001", ActivityAt: at}, {DeviceID: "d-000002", ActivityAt: at}})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the activity batch did not wait for the delete: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the activity batch does not wait for the delete's lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := del.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the batch that raced the delete: %v", err)
	}
	rows, err := db.pool.Query(ctx, `SELECT device_id FROM device_activity ORDER BY device_id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != "d-000002" {
		t.Errorf("activity recorded for %v, want d-000002 alone", ids)
	}
}
