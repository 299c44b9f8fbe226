package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/sim"
	"github.com/herd-iot/herd/internal/twin"
)

// benchHub is a hub running in this process.
type benchHub struct {
	*hub.Hub
	dir     string
	store   *backend
	cancel  context.CancelFunc
	done    chan error
	cleanup func()
}

// hub starts a hub on a temporary data folder of its own (HTTPS on a free
// loopback port, no TLS MQTT; plain MQTT on a free port if plain), on a
// new store of b: empty, or a fresh copy of the fleet of shape with n
// devices. stop removes the folder and the store.
func (b *backend) hub(ctx context.Context, name string, shape fleetdb.Shape, n int, plain bool) (*benchHub, error) {
	dir, err := os.MkdirTemp("", "herd-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	spec, cleanup, err := b.storeFor(ctx, dir, shape, n)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	h, err := runHubIn(ctx, dir, spec, plain)
	if err != nil {
		cleanup()
		os.RemoveAll(dir)
		return nil, err
	}
	h.store, h.cleanup = b, cleanup
	return h, nil
}

func runHubIn(ctx context.Context, dir, spec string, plain bool) (*benchHub, error) {
	return runHubWith(ctx, dir, spec, plain, nil)
}

// stop shuts the hub down, waits for it and removes its data folder and
// store.
func (h *benchHub) stop() error {
	h.cancel()
	err := <-h.done
	h.cleanup()
	return errors.Join(err, os.RemoveAll(h.dir))
}

// register creates n devices with generated keys straight in the store
// (the registry's bulk REST API is measured elsewhere) and returns them.
func register(ctx context.Context, h *benchHub, prefix string, n int) ([]sim.Identity, error) {
	ids := make([]sim.Identity, n)
	now := time.Now()
	for start := 0; start < n; start += 5000 {
		ops := make([]registry.Op, 0, 5000)
		for i := start; i < min(start+5000, n); i++ {
			ids[i] = sim.Identity{ID: fmt.Sprintf("%s%07d", prefix, i), Key: auth.NewKey()}
			ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: ids[i].ID, Twin: twin.NewDoc(now), Device: &herd.Device{
				DeviceID: ids[i].ID, GenerationID: "1", Status: herd.DeviceEnabled,
				Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: ids[i].Key, SecondaryKey: auth.NewKey()}}}})
		}
		res, err := h.Store.ApplyDevices(ctx, ops)
		if err != nil {
			return nil, err
		}
		for _, r := range res {
			if r.Err != nil {
				return nil, r.Err
			}
		}
	}
	return ids, nil
}

// runJob creates a job (PUT /jobs/v2/{id} as the REST API does) and
// waits until it has ended; the hub's own start and end times time it.
func runJob(ctx context.Context, h *benchHub, id, body string) (*herd.Job, time.Duration, error) {
	if _, err := h.Jobs.Create(ctx, id, []byte(body), nil); err != nil {
		return nil, 0, err
	}
	j, err := waitJobEnded(ctx, h, id)
	if err != nil {
		return nil, 0, err
	}
	if j.Status != herd.JobCompleted {
		return j, 0, fmt.Errorf("job %s ended %s: %s", id, j.Status, j.FailureReason)
	}
	return j, j.EndTime.Sub(j.StartTime.Time), nil
}

// waitJobEnded polls a job until it has ended.
func waitJobEnded(ctx context.Context, h *benchHub, id string) (*herd.Job, error) {
	for {
		j, err := h.Jobs.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if j.EndTime != nil && !j.EndTime.IsZero() {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// jobRuns runs a job runs times (ids prefix-1, prefix-2, …) over n
// devices, each must succeed on every device, and returns the durations
// sorted.
func jobRuns(ctx context.Context, h *benchHub, runs, n int, prefix, body string) ([]time.Duration, error) {
	var took []time.Duration
	for i := 1; i <= runs; i++ {
		j, d, err := runJob(ctx, h, fmt.Sprintf("%s-%d", prefix, i), body)
		if err != nil {
			return nil, err
		}
		if st := j.DeviceJobStatistics; st == nil || st.SucceededCount != int64(n) {
			return nil, fmt.Errorf("job %s: %+v, want %d devices succeeded", j.JobID, st, n)
		}
		took = append(took, d)
	}
	slices.Sort(took)
	return took, nil
}

// rate prints devices per second of the median run, and the runs.
func rate(n int, took []time.Duration) string {
	med := took[len(took)/2]
	return fmt.Sprintf("**%s devices/s** (%s)", count(int(float64(n)/med.Seconds())), seconds(med)) + runsNote(took)
}

// runsNote lists sorted runs after the median made of them.
func runsNote(took []time.Duration) string {
	if len(took) < 2 {
		return ""
	}
	var all []string
	for _, d := range took {
		all = append(all, seconds(d))
	}
	return fmt.Sprintf("; median of %d runs: %s", len(took), strings.Join(all, ", "))
}

func waitConnected(ctx context.Context, h *benchHub, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for h.Bus.Connected() != n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d devices connected, want %d", h.Bus.Connected(), n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
