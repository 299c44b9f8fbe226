// Package postgres implements every Store interface of Herd's domain
// packages on PostgreSQL (github.com/jackc/pgx/v5 with a sized pool), the
// store for fleets that outgrow one file and the first half of cluster
// mode. It passes the same conformance suite as the SQLite store
// (internal/store/storetest).
//
// Twin sections are jsonb columns, with a GIN jsonb_path_ops index on
// tags; twin queries compile with the query.Postgres dialect. Text is
// stored and compared in byte order (COLLATE "C"). Schema migrations are
// embedded and applied at Open under an advisory lock, so that several
// nodes starting at once do not race. Each method that writes does so in
// one transaction; read-modify-write goes through row locks (SELECT …
// FOR UPDATE), so that concurrent writers — one hub's or several
// nodes' — lose nothing. Driver errors are translated into herd codes at
// this package's boundary.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is a Herd database on a PostgreSQL server.
type DB struct {
	*conns
	// fence, if not 0, is the lease epoch that the job writes through
	// this DB carry (JobLeases' Fenced).
	fence int64
}

// conns are a DB's connections, shared with its fenced views.
type conns struct {
	pool *pgxpool.Pool

	mu      sync.Mutex
	claimed *pgx.Conn // holds hubLock while a hub serves the database
}

// hubLock is the advisory lock key a serving hub holds (the text
// "herd.hub" hashed).
const hubLock = 7218307461234906438

// jobLock is the advisory lock key of the node that leads a cluster (the
// text "herd.jobs" hashed: it ran the jobs before they had leases).
const jobLock = 7218307461234906439

// migrationLock is the advisory lock key under which migrations run (the
// text "herd.migrations" hashed, any constant would do).
const migrationLock = 7218307461234906437

// DefaultPoolSize is the pool's size unless the URL sets pool_max_conns:
// enough for the REST API, the job engine's batches and the registry's
// flushes at once (pgx's own default, 4 on two cores, is not).
func DefaultPoolSize() int32 { return int32(max(16, 4*runtime.GOMAXPROCS(0))) }

// Open connects to the database the URL names and migrates it to the
// current schema. A bad URL, a server that cannot be reached, a refused
// login and missing rights each fail with a message that says which.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("not a PostgreSQL URL (postgres://user@host:5432/db?sslmode=disable): %v", redactErr(err))
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = DefaultPoolSize()
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, explain(cfg, err)
	}
	db := &DB{conns: &conns{pool: pool}}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, explain(cfg, err)
	}
	return db, nil
}

// explain turns a connection or migration failure into what to do.
func explain(cfg *pgxpool.Config, err error) error {
	where := cfg.ConnConfig.Host
	if cfg.ConnConfig.Port != 0 && !strings.HasPrefix(where, "/") {
		where = net.JoinHostPort(where, strconv.Itoa(int(cfg.ConnConfig.Port)))
	}
	who := fmt.Sprintf("user %q, database %q at %s", cfg.ConnConfig.User, cfg.ConnConfig.Database, where)
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01", "28000":
			return fmt.Errorf("PostgreSQL refused the login (%s): %s", who, pe.Message)
		case "3D000":
			return fmt.Errorf("PostgreSQL has no such database (%s): create it with `createdb %s`", who, cfg.ConnConfig.Database)
		case "42501":
			return fmt.Errorf("PostgreSQL: %s lacks the rights Herd needs (to create its tables and functions in the database): %s", who, pe.Message)
		}
		return fmt.Errorf("PostgreSQL (%s): %s (SQLSTATE %s)", who, pe.Message, pe.Code)
	}
	if errors.Is(err, ErrNewerSchema) { // says no more than the migration's number
		return fmt.Errorf("PostgreSQL (%s): %w", who, err)
	}
	var ne net.Error
	if errors.As(err, &ne) || strings.Contains(err.Error(), "connect") {
		return fmt.Errorf("cannot reach PostgreSQL (%s): %v", who, redactErr(err))
	}
	return fmt.Errorf("PostgreSQL (%s): %v", who, redactErr(err))
}

// redactErr keeps a password in a URL out of an error's text.
func redactErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "://"); i >= 0 {
		if j := strings.Index(s[i:], "@"); j > 0 {
			if k := strings.Index(s[i+3:i+j], ":"); k >= 0 {
				s = s[:i+3+k+1] + "***" + s[i+j:]
			}
		}
	}
	return s
}

// ErrNewerSchema is returned by Open for a database migrated by a newer
// herd.
var ErrNewerSchema = errors.New("the database was migrated by a newer herd")

// migrate applies the embedded migrations not applied yet, in order, each
// in its own transaction, holding the advisory lock.
func (db *DB) migrate(ctx context.Context) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrationLock))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	known := map[int]bool{}
	for _, f := range files {
		name := strings.TrimPrefix(f, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: the name must start with a number", name)
		}
		known[v] = true
	}
	// A database a newer herd migrated is not opened: this herd would
	// read and write tables whose meaning it does not know (in a cluster:
	// a node of an older version started after a newer one migrated).
	for v := range applied {
		if !known[v] {
			return fmt.Errorf("%w: it has migration %d, which this herd does not know (a newer herd used it); run that herd or a newer one",
				ErrNewerSchema, v)
		}
	}
	for _, f := range files {
		name := strings.TrimPrefix(f, "migrations/")
		v, _ := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if applied[v] {
			continue
		}
		body, err := migrations.ReadFile(f)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn.Conn(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, v, name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
	}
	return nil
}

// Close closes the pool.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.claimed != nil {
		db.claimed.Close(context.Background()) // ends the session: the lock goes with it
		db.claimed = nil
	}
	db.mu.Unlock()
	db.pool.Close()
	return nil
}

// Claim makes the calling hub the only one serving this database
// (hub.Claimer) until Close: it takes a session advisory lock on a
// connection of its own, outside the pool, which PostgreSQL releases when
// that session ends — at Close, or when the process dies. A second hub on
// the same database is refused unless every hub is a node of a cluster
// (--nats: Join).
func (db *DB) Claim(ctx context.Context) error {
	return db.lockSession(ctx, `SELECT pg_try_advisory_lock($1)`, "claim the database", func(name string) error {
		return fmt.Errorf("another hub is serving database %q: run one herd serve per database, or start every one with --nats as the nodes of a cluster (docs/cluster.md)", name)
	})
}

// lockSession opens the session that holds hubLock until Close and takes
// the lock with try (a query of the key, true when taken); refused is the
// error when another session holds it.
func (db *DB) lockSession(ctx context.Context, try, what string, refused func(database string) error) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.claimed != nil {
		return nil
	}
	cfg := db.pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	// A hub stopped (or killed) a moment ago holds the lock until
	// PostgreSQL has seen its session end: a few tries.
	for n := 0; ; n++ {
		var ok bool
		if err := conn.QueryRow(ctx, try, int64(hubLock)).Scan(&ok); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			db.claimed = conn
			return nil
		}
		if n == 20 {
			conn.Close(context.WithoutCancel(ctx))
			return refused(cfg.Database)
		}
		select {
		case <-ctx.Done():
			conn.Close(context.WithoutCancel(ctx))
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Join makes the calling hub node of a cluster serving this database
// (hub.ClusterStore) until Close: it takes hubLock shared, on a session of
// its own, so that a hub serving the database alone (Claim) is refused
// while nodes run, and nodes are refused while such a hub runs. On the
// same session it holds the node's own lock (nodeLockClass, the node id
// hashed) for as long as the session lives: the other nodes take over the
// jobs of a node whose lock is free at once, without waiting for their
// leases to lapse (JobLeases). A second node with the same id is refused.
func (db *DB) Join(ctx context.Context, node string) error {
	err := db.lockSession(ctx, `SELECT pg_try_advisory_lock_shared($1)`, "join the cluster of the database", func(name string) error {
		return fmt.Errorf("a hub started without --nats serves database %q alone: stop it, or start it with --nats too", name)
	})
	if err != nil {
		return err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	conn := db.claimed
	// A node killed a moment ago may hold its lock until PostgreSQL has
	// seen its session end, and a node taking over its jobs holds it for
	// the length of one statement: a few tries.
	for try := 0; ; try++ {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, nodeLockClass, node).Scan(&ok); err != nil {
			return fmt.Errorf("join the cluster of the database as node %s: %w", node, err)
		}
		if ok {
			return nil
		}
		if try == 50 {
			conn.Close(context.WithoutCancel(ctx))
			db.claimed = nil
			return fmt.Errorf("another node with id %q serves database %q: give every node its own --node-id", node, conn.Config().Database)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nodeLockClass is the first key of the advisory locks that say a node's
// database session lives (the second is the node id hashed, hashtext).
const nodeLockClass int32 = 0x48657264

// Lead waits until the calling node, which has joined (Join), is the one
// node of the cluster that leads it (applies the configurations; each job
// runs on the node holding its lease, JobLeases), trying every interval, and
// returns a channel closed when it no longer is: the database session
// holding the lock failed (checked every interval). A failed session is
// closed: the node Joins again (on a new session) before it leads again.
// It returns ctx's error if ctx ends first.
func (db *DB) Lead(ctx context.Context, every time.Duration) (<-chan struct{}, error) {
	for {
		db.mu.Lock()
		conn := db.claimed
		var ok bool
		var err error
		if conn == nil {
			err = errors.New("lead the cluster: the node has not joined the cluster (or closed)")
		} else {
			err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(jobLock)).Scan(&ok)
			if err != nil && ctx.Err() == nil {
				conn.Close(context.Background()) // the session failed: Join opens a new one
				db.claimed = nil
			}
		}
		db.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("lead the cluster: %w", err)
		}
		if ok {
			break
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			db.mu.Lock()
			conn := db.claimed
			err := errors.New("closed")
			if conn != nil {
				pctx, cancel := context.WithTimeout(ctx, every)
				_, err = conn.Exec(pctx, `SELECT 1`)
				cancel()
				if err != nil && ctx.Err() == nil {
					// The session, and the locks it held, are gone: Join
					// opens a new one.
					conn.Close(context.Background())
					db.claimed = nil
				}
			}
			db.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return lost, nil
}

// Unlead releases what Lead took, so that another node leads.
func (db *DB) Unlead(ctx context.Context) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.claimed == nil {
		return nil // closed: the session and its lock are gone
	}
	var ok bool
	if err := db.claimed.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, int64(jobLock)).Scan(&ok); err != nil {
		return fmt.Errorf("hand the cluster's lead over: %w", err)
	}
	if !ok {
		return errors.New("hand the cluster's lead over: this node did not hold it")
	}
	return nil
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if _, err := db.pool.Exec(ctx, `SELECT 1`); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// tx runs fn in a transaction, again (up to a few times) when PostgreSQL
// aborts it for a deadlock or a serialization failure.
func (db *DB) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	return leaseLost(retryAborted(ctx, func() error { return pgx.BeginFunc(ctx, db.pool, fn) }))
}

// batch sends b's statements in one round trip. They run in one implicit
// transaction: none is committed unless all succeed, and the locks they
// take are held until the last has run. read (if not nil) reads their
// results in order. Like tx, batch sends b again when PostgreSQL aborts
// it for a deadlock or a serialization failure.
//
// A transaction of several statements a round trip each holds its locks
// across every round trip; in a batch, only while the server runs it.
// The batches of a method job (claims, outcomes) lock the job's row.
func (db *DB) batch(ctx context.Context, b *pgx.Batch, read func(pgx.BatchResults) error) error {
	return leaseLost(retryAborted(ctx, func() error { return readBatch(db.pool.SendBatch(ctx, unsent(b)), read) }))
}

// unsent returns a copy of b's statements that pgx has not sent. A sent
// batch keeps the statements pgx prepared for it on that send's
// connection: sent again, on another connection or after an error made
// pgx drop them, it fails ("prepared statement … does not exist").
func unsent(b *pgx.Batch) *pgx.Batch {
	c := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, len(b.QueuedQueries))}
	for i, q := range b.QueuedQueries {
		c.QueuedQueries[i] = &pgx.QueuedQuery{SQL: q.SQL, Arguments: q.Arguments, Fn: q.Fn}
	}
	return c
}

// readBatch reads a batch's results with read (if not nil) and closes
// them, returning the first error.
func readBatch(br pgx.BatchResults, read func(pgx.BatchResults) error) error {
	var err error
	if read != nil {
		err = read(br)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// retryAborted runs fn again (up to a few times) while PostgreSQL aborts
// its transaction for a deadlock or a serialization failure.
func retryAborted(ctx context.Context, fn func() error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = fn()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || (pe.Code != "40001" && pe.Code != "40P01") || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
	}
	return err
}

// placeholders numbers the arguments of a statement built in pieces.
type placeholders struct{ args []any }

// add binds v and returns its placeholder.
func (p *placeholders) add(v any) string {
	p.args = append(p.args, v)
	return "$" + strconv.Itoa(len(p.args))
}
