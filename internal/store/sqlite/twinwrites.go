package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/twin"
)

// Twin writes are committed in groups. A single-twin read-modify-write
// (PATCH /twins/{id}, a device's reported properties) costs a transaction
// on the one writer connection, and a good part of that is the commit. When
// many arrive at once — a fleet reporting back the desired properties a
// twin job set — the writer takes every write that is waiting and commits
// them together: each runs in a savepoint of its own, so one that fails
// (a stale etag, a section over its limit) is rolled back alone and the
// others are kept. A write that arrives alone is committed at once, without
// waiting for company.

// maxTwinGroup bounds how many twin writes share one transaction, so that
// other writers (jobs, the registry) wait for at most one group.
const maxTwinGroup = 256

// errClosed answers writes that arrive after Close.
var errClosed = errors.New("the database is closed")

// twinWrite is one UpdateTwin call waiting for the group writer.
type twinWrite struct {
	ctx  context.Context
	id   string
	fn   func(*herd.Device, *twin.Doc) error
	dev  *herd.Device
	doc  *twin.Doc
	err  error
	done chan struct{}
}

// twinWriter commits queued twin writes in groups on its own goroutine.
type twinWriter struct {
	mu     sync.RWMutex // held for reading while sending, for writing to close
	closed bool
	queue  chan *twinWrite
	stop   chan struct{}
	done   chan struct{}
	// queued counts the writes ever queued (tests watch it).
	queued atomic.Int64
}

func (db *DB) startTwinWriter() {
	w := &twinWriter{queue: make(chan *twinWrite, maxTwinGroup), stop: make(chan struct{}), done: make(chan struct{})}
	db.twinWrites = w
	go func() {
		defer close(w.done)
		for {
			var group []*twinWrite
			select {
			case t := <-w.queue:
				group = append(group, t)
			case <-w.stop:
				// Nothing can be queued any more: commit what was.
				for len(w.queue) > 0 {
					db.commitTwins(w.take(nil))
				}
				return
			}
			db.commitTwins(w.take(group))
		}
	}()
}

// take adds to group the writes waiting in the queue, up to maxTwinGroup.
func (w *twinWriter) take(group []*twinWrite) []*twinWrite {
	for len(group) < maxTwinGroup {
		select {
		case t := <-w.queue:
			group = append(group, t)
		default:
			return group
		}
	}
	return group
}

// enqueue hands a write to the writer goroutine.
func (w *twinWriter) enqueue(ctx context.Context, t *twinWrite) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return errClosed
	}
	select {
	case w.queue <- t:
		w.queued.Add(1)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close commits the writes already queued, refuses new ones and stops
// the writer goroutine.
func (w *twinWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	<-w.done
}

// UpdateTwin reads a twin, lets fn change it and writes it back, in one
// transaction that it may share with other twin writes. fn's error is
// returned as is, and nothing of that write is kept.
func (db *DB) UpdateTwin(ctx context.Context, id string, fn func(*herd.Device, *twin.Doc) error) (*herd.Device, *twin.Doc, error) {
	t := &twinWrite{ctx: ctx, id: id, fn: fn, done: make(chan struct{})}
	if err := db.twinWrites.enqueue(ctx, t); err != nil {
		if errors.Is(err, errClosed) {
			return nil, nil, fmt.Errorf("update twin %q: %w", id, err)
		}
		return nil, nil, err
	}
	// Once queued, the write is committed or rolled back before done
	// closes; waiting for it keeps the answer true to what was stored.
	<-t.done
	if t.err != nil {
		if herd.ErrorCodeOf(t.err) != herd.ErrInternal {
			return nil, nil, t.err
		}
		return nil, nil, fmt.Errorf("update twin %q: %w", id, t.err)
	}
	return t.dev, t.doc, nil
}

// commitTwins runs a group of twin writes in one transaction and answers
// each of them.
func (db *DB) commitTwins(group []*twinWrite) {
	defer func() {
		for _, t := range group {
			close(t.done)
		}
	}()
	live := group[:0:0]
	for _, t := range group {
		if err := t.ctx.Err(); err != nil {
			t.err = err // given up before its turn: nothing written
			continue
		}
		live = append(live, t)
	}
	if len(live) == 0 {
		return
	}
	// The transaction is the group's, not any one caller's: a caller that
	// gives up meanwhile does not roll back the others.
	ctx := context.Background()
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if len(live) == 1 {
			t := live[0]
			t.dev, t.doc, t.err = db.readModifyWrite(ctx, tx, t.id, t.fn)
			return t.err
		}
		for _, t := range live {
			if _, err := tx.ExecContext(ctx, `SAVEPOINT twin_write`); err != nil {
				return err
			}
			t.dev, t.doc, t.err = db.readModifyWrite(ctx, tx, t.id, t.fn)
			if t.err != nil {
				if _, err := tx.ExecContext(ctx, `ROLLBACK TO twin_write`); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `RELEASE twin_write`); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// The transaction did not commit: no write of the group was kept.
		for _, t := range live {
			if t.err == nil {
				t.err = err
			}
			t.dev, t.doc = nil, nil
		}
	}
}

// readModifyWrite reads a twin in tx, applies fn and writes it back.
func (db *DB) readModifyWrite(ctx context.Context, tx *sql.Tx, id string, fn func(*herd.Device, *twin.Doc) error) (*herd.Device, *twin.Doc, error) {
	var raw rawDoc
	dev, err := scanDevice(tx.StmtContext(ctx, db.stmts.twinForUpdate).QueryRowContext(ctx, id), raw.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, notFound(id)
	}
	if err != nil {
		return nil, nil, err
	}
	doc, err := raw.decode()
	if err != nil {
		return nil, nil, err
	}
	if err := fn(dev, doc); err != nil {
		return nil, nil, err
	}
	if err := db.writeDoc(ctx, tx, id, doc); err != nil {
		return nil, nil, err
	}
	return dev, doc, nil
}
