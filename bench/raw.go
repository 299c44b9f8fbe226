package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/store"
	_ "github.com/herd-iot/herd/internal/store/sqlite" // registers the "sqlite" driver
	"github.com/herd-iot/herd/internal/twin"
)

// rawTwinUpdate times one SQL UPDATE that merges the twin job's patch into
// every twin of a fresh copy of the n-device jobs fleet — tags, desired
// properties, versions and etags, the desired $metadata with its
// $lastUpdatedVersion — in one transaction, as the store's set-based path
// writes them, without the job's device records, statistics and batches.
// It is the floor the twin job is compared with.
func rawTwinUpdate(ctx context.Context, b *backend, n int) (time.Duration, error) {
	p, err := twin.ParseService([]byte(twinJobPatch))
	if err != nil {
		return 0, err
	}
	plan, err := p.Plan(time.Now())
	if err != nil {
		return 0, err
	}
	version := `'"$lastUpdatedVersion":' || (desired_version + 1)`
	if b.kind == storeSQLite {
		return rawSQLite(ctx, b, n, `UPDATE devices SET twin_version = twin_version + 1, twin_etag = twin_etag + 1,
			tags = jsonb_patch(tags, ?1), desired = jsonb_patch(desired, ?2),
			desired_metadata = jsonb_patch(desired_metadata, replace(?3, '`+twin.VersionMarker+`', `+version+`)),
			desired_version = desired_version + 1`, string(plan.Tags), string(plan.Desired), string(plan.DesiredMeta))
	}
	return rawPostgres(ctx, b, n, `UPDATE devices SET twin_version = twin_version + 1, twin_etag = twin_etag + 1,
		tags = tags || $1::text::jsonb, desired = desired || $2::text::jsonb,
		desired_metadata = desired_metadata || replace($3::text, '`+twin.VersionMarker+`', `+version+`)::jsonb,
		desired_version = desired_version + 1`, string(plan.Tags), string(plan.Desired), string(plan.DesiredMeta))
}

func rawSQLite(ctx context.Context, b *backend, n int, stmt string, args ...any) (time.Duration, error) {
	src, err := sqliteFleet(ctx, b.e, fleetdb.Jobs, n)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "herd-bench-raw-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, store.SQLiteFile)
	if err := fleetdb.Copy(src, path); err != nil {
		return 0, err
	}
	// The pragmas of the store's writer connection.
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(ON)",
		"cache_size(-65536)", "mmap_size(4294967296)", "temp_store(MEMORY)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, stmt, args...)
	if err != nil {
		tx.Rollback()
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	took := time.Since(start)
	if k, _ := res.RowsAffected(); k != int64(n) {
		return 0, fmt.Errorf("the raw UPDATE changed %d twins, want %d", k, n)
	}
	return took, nil
}

func rawPostgres(ctx context.Context, b *backend, n int, stmt string, args ...any) (time.Duration, error) {
	template, err := b.pg.fleet(ctx, b.e, fleetdb.Jobs, n)
	if err != nil {
		return 0, err
	}
	name, err := b.pg.create(ctx, template)
	if err != nil {
		return 0, err
	}
	defer b.pg.drop(context.WithoutCancel(ctx), name)
	conn, err := pgx.Connect(ctx, b.pg.url(name))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	start := time.Now()
	tag, err := conn.Exec(ctx, stmt, args...) // one statement: its own transaction
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if tag.RowsAffected() != int64(n) {
		return 0, fmt.Errorf("the raw UPDATE changed %d twins, want %d", tag.RowsAffected(), n)
	}
	return took, nil
}
