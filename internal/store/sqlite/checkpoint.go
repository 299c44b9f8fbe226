package sqlite

import (
	"database/sql"
	"time"
)

// Checkpoints: in WAL mode a commit appends pages to the write-ahead log,
// and a checkpoint copies them back into the database file. SQLite's
// default is that the committing connection checkpoints whenever the log
// passes 1000 pages — on the writer's goroutine, between two transactions,
// so the single writer spends part of its time copying pages (about 15 % of
// a twin-update job over a million devices).
//
// The store checkpoints on a connection of its own instead: after a write
// transaction commits, the checkpointer runs a PASSIVE checkpoint (which
// never blocks the writer or readers) at most every checkpointInterval. The
// writer keeps SQLite's automatic checkpoint with a larger threshold,
// walAutoCheckpoint, only as a bound on the log: by the time the log
// reaches it the checkpointer has copied nearly all of it, the writer's
// checkpoint finishes the rest and the log starts over.
const (
	checkpointInterval = 100 * time.Millisecond
	// walAutoCheckpoint is in pages (64 MB of PageSize pages).
	walAutoCheckpoint = (64 << 20) / PageSize
	// walSizeLimit is the size, in bytes, that the log file is truncated
	// to when it starts over.
	walSizeLimit = 64 << 20
)

// checkpointer runs checkpoints on its own connection.
type checkpointer struct {
	conn *sql.DB
	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newCheckpointer(conn *sql.DB) *checkpointer {
	c := &checkpointer{conn: conn, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// committed tells the checkpointer that a write transaction committed.
func (c *checkpointer) committed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		// A failed or busy passive checkpoint changes nothing; the next
		// one or the writer's automatic checkpoint copies the pages.
		_, _ = c.conn.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
		pause.Reset(checkpointInterval)
		select {
		case <-c.stop:
			return
		case <-pause.C:
		}
	}
}

// close stops the checkpointer and closes its connection.
func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.conn.Close()
}
