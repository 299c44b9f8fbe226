package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/internal/store/postgres"
)

// Stores the benchmarks run on, side by side in one run.
const (
	storeSQLite   = "sqlite"
	storePostgres = "postgres"
)

// benchPGSettings are the settings of the PostgreSQL server the harness
// starts: durable as PostgreSQL ships (fsync, synchronous commits and full
// page writes on, unlike the tests' throwaway servers), with the memory
// and checkpoint spacing one would give a database server on this
// machine.
var benchPGSettings = []string{
	"fsync=on", "synchronous_commit=on", "full_page_writes=on",
	"shared_buffers=4GB", "effective_cache_size=12GB", "work_mem=64MB", "maintenance_work_mem=1GB",
	"max_wal_size=16GB", "checkpoint_timeout=30min",
}

// backend is one store the benchmarks run on.
type backend struct {
	kind string // storeSQLite or storePostgres
	pg   *pgBench
	e    *bench
}

// Name is how the report names the store.
func (b *backend) Name() string {
	if b.kind == storePostgres {
		return "PostgreSQL"
	}
	return "SQLite"
}

// backends returns the stores cfg asks for, starting PostgreSQL if needed;
// close stops what they started.
func backends(ctx context.Context, e *bench) ([]*backend, func(), error) {
	var out []*backend
	var pg *pgBench
	for _, k := range e.cfg.stores {
		b := &backend{kind: k, e: e}
		if k == storePostgres {
			if pg == nil {
				var err error
				if pg, err = newPGBench(ctx, e); err != nil {
					return nil, nil, err
				}
			}
			b.pg = pg
		}
		out = append(out, b)
	}
	return out, func() {
		if pg != nil {
			pg.close()
		}
	}, nil
}

// pgBench is the PostgreSQL server of a run: a throwaway one the harness
// starts with benchPGSettings, or the one --postgres names. Databases it
// creates are named herd_bench_* and dropped at the end.
type pgBench struct {
	srv     *pgtest.Server
	admin   string            // URL of a database to run CREATE and DROP DATABASE in
	fleets  map[string]string // fleet templates by shape and size
	created []string
	seq     int
	version string
}

func newPGBench(ctx context.Context, e *bench) (*pgBench, error) {
	cfg, logf := e.cfg, e.logf
	p := &pgBench{fleets: map[string]string{}}
	if cfg.postgres != "" {
		p.admin = cfg.postgres
	} else {
		logf("starting a PostgreSQL server for the benchmarks (%s)", strings.Join(benchPGSettings, " "))
		srv, err := pgtest.StartWith(benchPGSettings...)
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL for the benchmarks (install Debian's postgresql, or give --postgres URL, or --stores sqlite): %w", err)
		}
		p.srv, p.admin = srv, srv.AdminURL()
	}
	if err := p.exec(ctx, p.admin, ""); err != nil {
		p.close()
		return nil, err
	}
	settings := "the server given with --postgres"
	if p.srv != nil {
		settings = "a server the harness started (initdb --locale=C; " + strings.Join(benchPGSettings, ", ") + ")"
	}
	e.r.note("PostgreSQL %s: %s, on the same machine, unix socket; the hub's pool holds %d connections.", p.version, settings, postgres.DefaultPoolSize())
	return p, nil
}

// exec runs sql on the database at u (only connects when sql is empty,
// and records the server's version).
func (p *pgBench) exec(ctx context.Context, u, sql string) error {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL %s: %w", store.Redact(u), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if sql == "" {
		return conn.QueryRow(ctx, "SHOW server_version").Scan(&p.version)
	}
	_, err = conn.Exec(ctx, sql)
	return err
}

// url is the URL of the database name on the server.
func (p *pgBench) url(name string) string {
	u, err := url.Parse(p.admin)
	if err != nil {
		return p.admin
	}
	u.Path = "/" + name
	return u.String()
}

// create makes a new database, a copy of template if it is not "".
func (p *pgBench) create(ctx context.Context, template string) (string, error) {
	p.seq++
	name := fmt.Sprintf("herd_bench_%d_%d", os.Getpid(), p.seq)
	sql := "CREATE DATABASE " + name
	if template != "" {
		sql += " TEMPLATE " + template
	}
	if err := p.exec(ctx, p.admin, sql); err != nil {
		return "", fmt.Errorf("%s: %w", sql, err)
	}
	p.created = append(p.created, name)
	if template != "" {
		// The copy's pages are in the WAL (CREATE DATABASE's WAL_LOG
		// strategy); a checkpoint writes them out now, so that a measured
		// run starts on a database at rest, as a hub's is, instead of
		// flushing the copy meanwhile. Best effort: a --postgres user may
		// lack the right.
		_ = p.exec(ctx, p.admin, "CHECKPOINT")
	}
	return name, nil
}

func (p *pgBench) drop(ctx context.Context, name string) error {
	return p.exec(ctx, p.admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
}

func (p *pgBench) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if p.srv != nil {
		p.srv.Stop()
		return
	}
	for _, name := range p.created {
		_ = p.drop(ctx, name)
	}
}

// fleet returns the template database of a fleet (fleetdb's shape, n
// devices), built the first time by copying the SQLite fleet with
// store.Copy — as herd store copy does — which the report records, then
// vacuumed and analyzed as autovacuum would leave a settled database.
func (p *pgBench) fleet(ctx context.Context, e *bench, shape fleetdb.Shape, n int) (string, error) {
	key := fmt.Sprintf("%s-%d", shape, n)
	if name, ok := p.fleets[key]; ok {
		return name, nil
	}
	path, err := sqliteFleet(ctx, e, shape, n)
	if err != nil {
		return "", err
	}
	name, err := p.create(ctx, "")
	if err != nil {
		return "", err
	}
	e.logf("copying the %d-device %s from SQLite to PostgreSQL", n, fleetLabel(shape))
	took, err := copyStores(ctx, "sqlite:"+path, p.url(name), filepath.Dir(path))
	if err != nil {
		return "", err
	}
	e.r.add(row{what: "`herd store copy` of a hub (store.Copy: every table, one transaction of the target), SQLite → PostgreSQL", store: "both",
		scale: fmt.Sprintf("%s devices (%s)", count(n), fleetLabel(shape)), measured: fmt.Sprintf("**%s** (%s devices/s)", seconds(took), count(int(float64(n)/took.Seconds())))})
	if err := p.exec(ctx, p.url(name), "VACUUM ANALYZE"); err != nil {
		return "", fmt.Errorf("vacuum the fleet: %w", err)
	}
	p.fleets[key] = name
	return name, nil
}

// sqliteFleet returns the SQLite fleet database of shape and n, building it
// into cfg.dir the first time.
func sqliteFleet(ctx context.Context, e *bench, shape fleetdb.Shape, n int) (string, error) {
	start := time.Now()
	path, built, err := fleetdb.Path(ctx, e.cfg.dir, shape, n)
	if err != nil {
		return "", err
	}
	if built {
		e.logf("built a %s of %d devices in %s (kept in %s)", shape, n, time.Since(start).Round(time.Second), e.cfg.dir)
	}
	return path, nil
}

// copyStores copies the hub in the store from into the new store to and
// returns how long store.Copy took.
func copyStores(ctx context.Context, from, to, dataDir string) (time.Duration, error) {
	src, err := store.Open(ctx, from, dataDir)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := store.Open(ctx, to, dataDir)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	_, err = store.Copy(ctx, src, dst, false, nil)
	took := time.Since(start)
	return took, errors.Join(err, dst.Close())
}

// storeFor returns the --store value and the clean-up of a new store of
// b for a hub in dir: for SQLite a copy of the fleet database (or a new
// database) in dir, for PostgreSQL a new database copied from the fleet's
// template (or empty).
func (b *backend) storeFor(ctx context.Context, dir string, shape fleetdb.Shape, n int) (string, func(), error) {
	if b.kind == storeSQLite {
		if shape == "" {
			return "", func() {}, nil
		}
		path, err := sqliteFleet(ctx, b.e, shape, n)
		if err != nil {
			return "", nil, err
		}
		return "", func() {}, fleetdb.Copy(path, filepath.Join(dir, store.SQLiteFile))
	}
	template := ""
	if shape != "" {
		var err error
		if template, err = b.pg.fleet(ctx, b.e, shape, n); err != nil {
			return "", nil, err
		}
	}
	name, err := b.pg.create(ctx, template)
	if err != nil {
		return "", nil, err
	}
	return b.pg.url(name), func() { _ = b.pg.drop(context.Background(), name) }, nil
}

// fleetLabel names a fleet shape in the report.
func fleetLabel(shape fleetdb.Shape) string {
	if shape == fleetdb.Query {
		return "query fleet"
	}
	return "jobs fleet"
}
