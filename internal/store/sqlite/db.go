// Package sqlite implements every Store interface of Herd's domain packages
// on an embedded SQLite database (modernc.org/sqlite, pure Go), in WAL mode
// with one writer connection, a pool of readers and a connection of its own
// for checkpoints (checkpoint.go). Schema migrations are embedded and
// applied when the database is opened; new databases get 16 KB pages.
//
// The store decides transactions: each method that writes does so in one
// transaction, and translates driver errors into herd error codes. Twin
// writes that arrive together share a transaction (twinwrites.go); a
// twin-update job's batches are set-based statements (jobs_twin.go).
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrations embed.FS

// PageSize is the page size of a new database, four times SQLite's
// default. A twin-update job rewrites every twin it targets, and the log
// takes each changed page as one frame (two write system calls and a
// checksum): with 16 KB pages a million-twin job writes a quarter of the
// frames and spends about 20 % less time, and queries over a million
// twins read fewer pages (8–17 % faster). A small transaction logs a whole
// page too, 16 KB instead of 4 KB, which makes a single-twin write about
// 15 % slower (docs/benchmarks.md, "Jobs"). SQLite fixes the page size
// when the first table is written, and a database in WAL mode cannot
// change it: databases created with 4 KB pages keep them.
const PageSize = 16384

// createMigrations is the table of applied migrations, the first table of
// every database.
const createMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`

// DB is a Herd database in one SQLite file.
type DB struct {
	write      *sql.DB // one connection: SQLite has one writer
	read       *sql.DB // a pool of read-only connections
	ckpt       *checkpointer
	stmts      *stmts
	twinWrites *twinWriter
	closeOnce  sync.Once
	closeErr   error
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Add("_pragma", "cache_size(-65536)")
	q.Add("_pragma", "mmap_size(4294967296)")
	if readOnly {
		q.Add("_pragma", "query_only(ON)")
	} else {
		q.Set("_txlock", "immediate")
		// Statement journals in memory: a multi-row UPDATE inside a
		// transaction copies every page it changes to one, so that the
		// statement alone can be undone; on disk that is a write system
		// call per page (a twin-update job's batch rewrites ~300 pages).
		q.Add("_pragma", "temp_store(MEMORY)")
		q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walAutoCheckpoint))
		q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walSizeLimit))
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path and migrates it to
// the current schema.
func Open(ctx context.Context, path string) (*DB, error) {
	if err := registerFunctions(); err != nil {
		return nil, fmt.Errorf("register SQL functions: %w", err)
	}
	if err := create(ctx, path); err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	write, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	db := &DB{write: write}
	if err := db.migrate(ctx); err != nil {
		write.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0)*2)
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	db.read = read
	ckpt, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		read.Close()
		write.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	ckpt.SetMaxOpenConns(1)
	ckpt.SetMaxIdleConns(1)
	db.ckpt = newCheckpointer(ckpt)
	if db.stmts, err = prepareStmts(ctx, write, read); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.startTwinWriter()
	return db, nil
}

// create gives a database file that does not exist yet (or is empty) its
// page size, before anything puts it in WAL mode.
func create(ctx context.Context, path string) error {
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		return nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma="+url.QueryEscape(fmt.Sprintf("page_size(%d)", PageSize)))
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	_, err = db.ExecContext(ctx, createMigrations)
	return errors.Join(err, db.Close())
}

// Ping checks that the database answers a read (GET /readyz).
func (db *DB) Ping(ctx context.Context) error {
	var n int
	if err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Close closes the database; closing it again does nothing. The last
// connection to close checkpoints the whole log into the database file.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		var err error
		if db.twinWrites != nil {
			db.twinWrites.close()
		}
		if db.stmts != nil {
			err = db.stmts.close()
		}
		db.closeErr = errors.Join(err, db.ckpt.close(), db.read.Close(), db.write.Close())
	})
	return db.closeErr
}

// ErrNewerSchema is returned by Open for a database migrated by a newer
// herd.
var ErrNewerSchema = errors.New("the database was migrated by a newer herd")

// migrate applies the embedded migrations that have not run yet, each in
// its own transaction, in the order of their numeric prefixes.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.write.ExecContext(ctx, createMigrations); err != nil {
		return err
	}
	applied := map[int]bool{}
	rows, err := db.write.QueryContext(ctx, `SELECT version FROM schema_migrations`)
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
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	type migration struct {
		version int
		name    string
	}
	var todo []migration
	known := map[int]bool{}
	for _, n := range names {
		base := strings.TrimPrefix(n, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return fmt.Errorf("migration %s: name must start with a number and '_'", base)
		}
		known[v] = true
		if !applied[v] {
			todo = append(todo, migration{v, base})
		}
	}
	// A database a newer herd migrated is not opened: this herd would
	// read and write tables whose meaning it does not know.
	for v := range applied {
		if !known[v] {
			return fmt.Errorf("%w: it has migration %d, which this herd does not know (a newer herd used it); run that herd or a newer one",
				ErrNewerSchema, v)
		}
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i].version < todo[j].version })
	for _, m := range todo {
		body, err := migrations.ReadFile("migrations/" + m.name)
		if err != nil {
			return err
		}
		err = db.tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UTC().Format(time.RFC3339))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// tx runs fn in a write transaction, committing if it returns nil.
func (db *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if db.ckpt != nil { // nil while migrating
		db.ckpt.committed()
	}
	return nil
}

// SchemaVersion is the number of the newest embedded migration: databases
// built for benchmarks are cached per schema version.
func SchemaVersion() int {
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	latest := 0
	for _, n := range names {
		num, _, _ := strings.Cut(strings.TrimPrefix(n, "migrations/"), "_")
		if v, err := strconv.Atoi(num); err == nil && v > latest {
			latest = v
		}
	}
	return latest
}
