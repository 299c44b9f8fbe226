package cluster_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/cluster"
)

// fakeStore is a cluster.Store in memory whose renewals fail while down.
type fakeStore struct {
	mu           sync.Mutex
	down         bool
	nodes        map[string]*herd.Node
	disconnected []string // DisconnectNode's nodes, in order
	orphans      int      // DisconnectOrphans calls
}

func (s *fakeStore) RenewNode(_ context.Context, l cluster.Lease) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("store unreachable")
	}
	s.nodes[l.NodeID] = &herd.Node{NodeID: l.NodeID, RenewedTime: herd.NewTime(l.RenewedTime), LeaseUntil: herd.NewTime(l.LeaseUntil)}
	return nil
}

func (s *fakeStore) StopNode(context.Context, string, time.Time) error { return nil }

func (s *fakeStore) Nodes(context.Context) ([]*herd.Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*herd.Node
	for _, n := range s.nodes {
		c := *n
		out = append(out, &c)
	}
	return out, nil
}

func (s *fakeStore) PurgeNodes(context.Context, time.Time) (int, error) { return 0, nil }

func (s *fakeStore) DisconnectNode(_ context.Context, node string, _ time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.disconnected = append(s.disconnected, node)
	return 1, nil
}

func (s *fakeStore) DisconnectOrphans(context.Context, time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.orphans++
	return 0, nil
}

func (s *fakeStore) swept() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.disconnected)
}

// A node that starts releases its own devices and the orphans; each
// renewal sweeps the lost nodes (never itself, never a live or stopped
// one); a renewal after the lease lapsed records the node's devices
// Connected again.
func TestLeaseSweepAndLapse(t *testing.T) {
	const lease = 3 * time.Second
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	st := &fakeStore{nodes: map[string]*herd.Node{
		"lost":    {NodeID: "lost", LeaseUntil: herd.NewTime(start.Add(-time.Second))},
		"live":    {NodeID: "live", LeaseUntil: herd.NewTime(start.Add(time.Hour))},
		"stopped": {NodeID: "stopped", LeaseUntil: herd.NewTime(start), StoppedTime: herd.NewTime(start)},
	}}
	var mu sync.Mutex
	var reconnected []string
	svc, err := cluster.New(cluster.Config{Store: st, NodeID: "me", Clock: clk, Lease: lease,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Connected: func() []string { return []string{"d1", "d2/m"} },
		Reconnect: func(id string, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			reconnected = append(reconnected, id+"@"+at.Sub(start).String())
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := st.swept(); !slices.Equal(got, []string{"me"}) || st.orphans != 1 {
		t.Fatalf("start released %v and orphans %d times, want [me] and once", got, st.orphans)
	}
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	// tick advances to the next renewal and waits for Run to schedule
	// the one after.
	tick := func() {
		t.Helper()
		clk.Advance(lease / 3)
		for deadline := time.Now().Add(10 * time.Second); clk.Pending() != 1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the lease was not renewed")
			}
		}
	}
	for clk.Pending() != 1 {
		time.Sleep(time.Millisecond)
	}
	tick()
	if got := st.swept(); !slices.Equal(got, []string{"me", "lost"}) {
		t.Errorf("after a renewal: swept %v, want me (at start) and lost", got)
	}
	st.mu.Lock()
	st.down = true
	st.mu.Unlock()
	for range 4 { // 4 s without a renewal: the 3 s lease lapsed
		tick()
	}
	if got := st.swept(); len(got) != 2 {
		t.Errorf("swept %v while the store was down", got)
	}
	mu.Lock()
	if len(reconnected) != 0 {
		t.Errorf("reconnected %v before the lease was renewed", reconnected)
	}
	mu.Unlock()
	st.mu.Lock()
	st.down = false
	st.mu.Unlock()
	tick()
	tick()
	mu.Lock()
	if want := []string{"d1@6s", "d2/m@6s"}; !slices.Equal(reconnected, want) {
		t.Errorf("after the lapsed lease was renewed: reconnected %v, want %v", reconnected, want)
	}
	mu.Unlock()
	cancel()
	<-done
}
