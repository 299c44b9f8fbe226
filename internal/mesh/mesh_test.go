package mesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/mesh"
)

func node(t *testing.T, url, id string, h mesh.Handlers) *mesh.Mesh {
	t.Helper()
	m, err := mesh.Connect(mesh.Config{URL: url, NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	nop := func(string) {}
	if h.Invoke == nil {
		h.Invoke = func(context.Context, string, herd.MethodRequest) (*herd.MethodResult, error) {
			return nil, herd.Errorf(herd.ErrDeviceNotOnline, "none here")
		}
	}
	h.DeviceChanged, h.Online, h.Changed = nop, nop, func([]string) {}
	if h.Desired == nil {
		h.Desired = func(string, int64, []byte, bool) {}
	}
	h.Attached = func(string, time.Time, int64) {}
	h.JobsChanged, h.ConfigurationsChanged = func() {}, func() {}
	h.JobProgress = func([]byte) {}
	h.Event = func(*herd.Event) {}
	if err := m.Serve(h); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDrain: a draining node answers the method calls it took and refuses
// new ones with DeviceNotOnline; Drain returns once those it took are
// answered.
func TestDrain(t *testing.T) {
	url := hubtest.NATS(t)
	started, release := make(chan struct{}, 1), make(chan struct{})
	a := node(t, url, "a", mesh.Handlers{Invoke: func(ctx context.Context, id string, req herd.MethodRequest) (*herd.MethodResult, error) {
		started <- struct{}{}
		<-release
		return &herd.MethodResult{Status: 200, Payload: json.RawMessage(`"done"`)}, nil
	}})
	b := node(t, url, "b", mesh.Handlers{})
	ctx := context.Background()
	req := herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 10}
	answered := make(chan error, 1)
	go func() {
		res, err := b.Invoke(ctx, "a", "d1", req)
		if err == nil && res.Status != 200 {
			err = herd.Errorf(herd.ErrGatewayTimeout, "status %d", res.Status)
		}
		answered <- err
	}()
	<-started
	drained := make(chan error, 1)
	go func() { drained <- a.Drain(ctx) }()
	// Refused once draining (the drain may not have begun at the first
	// try: the call is then held like the first one).
	deadline := time.Now().Add(10 * time.Second)
	for {
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.Invoke(short, "a", "d2", req)
		cancel()
		if herd.IsCode(err, herd.ErrDeviceNotOnline) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a call to a draining node: %v, want DeviceNotOnline", err)
		}
		select {
		case <-started: // taken before the drain began; answered below
		default:
		}
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned with a call being answered: %v", err)
	default:
	}
	close(release)
	if err := <-answered; err != nil {
		t.Errorf("the call taken before the drain: %v", err)
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
}

// TestCallsInBatches: many calls at once from one node to another each get
// their own device's answer (calls and answers travel in batches, matched
// by id); a call to a node that is not there fails at once with
// DeviceNotOnline.
func TestCallsInBatches(t *testing.T) {
	url := hubtest.NATS(t)
	node(t, url, "a", mesh.Handlers{Invoke: func(ctx context.Context, id string, req herd.MethodRequest) (*herd.MethodResult, error) {
		if id == "offline" {
			return nil, herd.Errorf(herd.ErrDeviceNotOnline, "not here")
		}
		return &herd.MethodResult{Status: 200, Payload: json.RawMessage(`"` + id + `"`)}, nil
	}})
	b := node(t, url, "b", mesh.Handlers{})
	ctx := context.Background()
	req := herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 10}
	const n = 500
	errs := make(chan error, n)
	for i := range n {
		go func() {
			id := fmt.Sprintf("d%d", i)
			res, err := b.Invoke(ctx, "a", id, req)
			if err == nil && string(res.Payload) != `"`+id+`"` {
				err = fmt.Errorf("%s got the answer %s", id, res.Payload)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if _, err := b.Invoke(ctx, "a", "offline", req); !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Errorf("a device not on the node: %v, want DeviceNotOnline", err)
	}
	if _, err := b.Invoke(ctx, "gone", "d1", req); !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Errorf("a node that is not there: %v, want DeviceNotOnline", err)
	}
}

// TestDesiredInOrder: a burst of desired changes reaches the other nodes
// whole and, for each device, in order (they travel in batches), the
// changes sent to every node and those sent to one node mixed; a change
// sent to one node reaches no other.
func TestDesiredInOrder(t *testing.T) {
	url := hubtest.NATS(t)
	var mu sync.Mutex
	last := map[string]int64{}
	got, elsewhere := 0, 0
	var bad []string
	// Even versions go to node a alone, odd ones to every node.
	node(t, url, "a", mesh.Handlers{Desired: func(id string, version int64, body []byte, routed bool) {
		mu.Lock()
		defer mu.Unlock()
		if version != last[id]+1 || string(body) != fmt.Sprintf(`{"v":%d}`, version) || routed != (version%2 == 0) {
			bad = append(bad, fmt.Sprintf("%s: version %d %s (routed %v) after %d", id, version, body, routed, last[id]))
		}
		last[id] = version
		got++
	}})
	node(t, url, "c", mesh.Handlers{Desired: func(id string, version int64, body []byte, routed bool) {
		mu.Lock()
		defer mu.Unlock()
		if routed || version%2 == 0 {
			bad = append(bad, fmt.Sprintf("node c got %s version %d (routed %v), sent to a alone", id, version, routed))
		}
		elsewhere++
	}})
	b := node(t, url, "b", mesh.Handlers{})
	const devices, versions = 100, 30
	for v := int64(1); v <= versions; v++ {
		for i := range devices {
			id, body := fmt.Sprintf("d%d", i), []byte(fmt.Sprintf(`{"v":%d}`, v))
			if v%2 == 0 {
				b.DesiredTo("a", id, v, body)
			} else {
				b.Desired(id, v, body)
			}
		}
	}
	hubtest.Eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got == devices*versions && elsewhere == devices*versions/2
	}, "not every desired change arrived")
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("%d changes out of order or misrouted, first: %s", len(bad), bad[0])
	}
}
