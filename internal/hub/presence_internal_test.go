package hub

import (
	"context"
	"testing"
	"time"
)

// slowClaims is a ClusterStore whose claims wait for release; nothing
// else of it is called.
type slowClaims struct {
	ClusterStore
	release chan struct{}
}

func (s *slowClaims) ClaimConnections(_ context.Context, _ string, ids []string, _ time.Time) (map[string]int64, error) {
	<-s.release
	out := map[string]int64{}
	for _, id := range ids {
		out[id] = 7
	}
	return out, nil
}

// TestClaimOutlivesItsCaller: a connect that gives up while its claim is
// being written still gets the claim's epoch, so that it can record the
// connection Disconnected; else the device would stay recorded Connected
// on this node with no connection behind it.
func TestClaimOutlivesItsCaller(t *testing.T) {
	s := &slowClaims{release: make(chan struct{})}
	p := newPresence(s, "node-0", time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		epoch int64
		err   error
	}
	got := make(chan result, 1)
	go func() {
		e, err := p.Claim(ctx, "d1")
		got <- result{e, err}
	}()
	cancel()
	select {
	case r := <-got:
		t.Fatalf("Claim returned %+v before the claim was written", r)
	case <-time.After(200 * time.Millisecond):
	}
	close(s.release)
	if r := <-got; r.err != nil || r.epoch != 7 {
		t.Fatalf("Claim after its caller gave up: %+v, want epoch 7", r)
	}
}
