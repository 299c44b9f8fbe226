package registry_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"log/slog"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/sqlite"
)

// flakyStore fails SetConnectionStates while failing is set, and can hold
// a write until released, to observe reads during a flush.
type flakyStore struct {
	*sqlite.DB
	mu      sync.Mutex
	failing bool
	hold    chan struct{}
	holding chan struct{}
}

func (f *flakyStore) SetConnectionStates(ctx context.Context, c []registry.ConnectionChange) error {
	f.mu.Lock()
	failing, hold := f.failing, f.hold
	f.mu.Unlock()
	if hold != nil {
		close(f.holding)
		<-hold
	}
	if failing {
		return errors.New("disk full")
	}
	return f.DB.SetConnectionStates(ctx, c)
}

func TestConnectionStateReadsNeverLag(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := &flakyStore{DB: db}
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	s := registry.NewService(st, "node-1", func() time.Time { return now }, nil, slog.Default())
	if _, err := s.Create(ctx, herd.Device{DeviceID: "d"}); err != nil {
		t.Fatal(err)
	}
	state := func() herd.ConnectionState {
		d, err := s.Get(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		return d.ConnectionState
	}

	s.RecordConnection("d", herd.Connected, now, 0)
	if state() != herd.Connected {
		t.Error("a recorded connection is not visible before the flush")
	}

	// During a flush the batch stays visible.
	st.hold, st.holding = make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Flush(ctx) }()
	<-st.holding
	if state() != herd.Connected {
		t.Error("the batch being written is not visible")
	}
	close(st.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st.hold = nil
	if d, _ := db.Device(ctx, "d"); d.ConnectionState != herd.Connected {
		t.Errorf("stored state %s after flush", d.ConnectionState)
	}

	// A failed flush keeps the batch for the next one.
	s.RecordConnection("d", herd.Disconnected, now.Add(time.Second), 0)
	st.failing = true
	if err := s.Flush(ctx); err == nil {
		t.Fatal("flush did not report the store failure")
	}
	if state() != herd.Disconnected {
		t.Error("a failed flush lost the change")
	}
	st.failing = false
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := db.Device(ctx, "d"); d.ConnectionState != herd.Disconnected {
		t.Errorf("stored state %s after the retried flush", d.ConnectionState)
	}
}
