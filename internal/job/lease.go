package job

import (
	"context"
	"errors"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/twin"
)

// Lease is a node's hold on a job in a cluster: the job runs on the one
// node whose lease runs. Each take raises Epoch, the fencing token that
// the engine's writes about the job carry.
type Lease struct {
	// Node is the node that holds the lease, or held it last; Until is
	// when the lease ends (zero: no node holds it).
	Node  string
	Epoch int64
	Until time.Time
}

// HeldAt says whether a node holds the lease at now.
func (l Lease) HeldAt(now time.Time) bool { return !l.Until.IsZero() && l.Until.After(now) }

// Leases is what the engines of a cluster's nodes share the jobs through
// (Config.Leases): a node runs a job only while it holds the job's lease,
// renews what it holds every third of the lease, and hands a job back
// when it stops. A node whose lease lapsed (killed, frozen, cut off from
// the store) loses the job to the first node that takes it, and from then
// on every write of the job through Fenced fails with ErrLeaseLost.
type Leases interface {
	// TakeJob leases job id to this node until until if no other node
	// holds it at now (a lease this node held before is taken again: it
	// restarted; a store may also know that the holder is gone before its
	// lease lapses), and returns the new epoch; 0 (and no error) if
	// another node holds it or the job has ended. The engine tries again
	// every third of a lease.
	TakeJob(ctx context.Context, id string, now, until time.Time) (int64, error)
	// RenewJobs extends the leases held (job id → epoch) to until and
	// returns the jobs whose lease this node no longer holds.
	RenewJobs(ctx context.Context, held map[string]int64, until time.Time) (lost []string, err error)
	// ReleaseJob ends the lease of a job at its epoch (the job ended, or
	// this node stops), so that another node may take it at once.
	ReleaseJob(ctx context.Context, id string, epoch int64) error
	// Fenced returns the store whose writes about a job, through the
	// methods fencing names, fail with ErrLeaseLost (and change nothing)
	// unless the job's lease is at epoch.
	Fenced(epoch int64) Store
}

// ErrLeaseLost is the answer of a fenced store (Leases.Fenced) to a write
// of a job whose lease another node took: nothing was changed, and the
// runner stops.
var ErrLeaseLost = errors.New("this node no longer holds the job's lease: another node runs it")

// DefaultLease is how long a job lease runs unless renewed (Config.Lease).
const DefaultLease = 15 * time.Second

// noEpoch is the fence of a job this node holds no lease of: no lease is
// at it, so every fenced write fails.
const noEpoch = -1

// fencing sends the engine's writes about a job through the store fenced
// at the epoch of the lease this node holds (Leases.Fenced), and those of
// a job it holds no lease of through a fence that refuses them. The
// writes of users (create, cancel, pause, resume) and the engine's reads
// go to the store as they are.
type fencing struct {
	Store
	s *Service
}

func (f fencing) of(id string) Store {
	f.s.mu.Lock()
	epoch, ok := f.s.leased[id]
	f.s.mu.Unlock()
	if !ok {
		epoch = noEpoch
	}
	return f.s.cfg.Leases.Fenced(epoch)
}

func (f fencing) StartJob(ctx context.Context, id string, cond *query.Query, now time.Time) (*Record, error) {
	return f.of(id).StartJob(ctx, id, cond, now)
}

func (f fencing) FailJob(ctx context.Context, id, reason string, now time.Time) error {
	return f.of(id).FailJob(ctx, id, reason, now)
}

func (f fencing) ApplyTwinBatch(ctx context.Context, id string, p twin.Patch, after string, limit int, now time.Time) (TwinBatchResult, error) {
	return f.of(id).ApplyTwinBatch(ctx, id, p, after, limit, now)
}

func (f fencing) ClaimDevices(ctx context.Context, id string, deviceIDs []string, now time.Time) ([]string, error) {
	return f.of(id).ClaimDevices(ctx, id, deviceIDs, now)
}

func (f fencing) FinishDevices(ctx context.Context, id string, outcomes []Outcome, now time.Time) error {
	return f.of(id).FinishDevices(ctx, id, outcomes, now)
}

func (f fencing) AbortJob(ctx context.Context, id, reason string, now time.Time) (*Record, error) {
	return f.of(id).AbortJob(ctx, id, reason, now)
}

func (f fencing) AdvanceWave(ctx context.Context, id string, wave int, pause bool, now time.Time) (*Record, error) {
	return f.of(id).AdvanceWave(ctx, id, wave, pause, now)
}

func (f fencing) ExpireJob(ctx context.Context, id string, end herd.JobStatus, reason string, devErr herd.DeviceJobError, now time.Time) error {
	return f.of(id).ExpireJob(ctx, id, end, reason, devErr, now)
}

func (f fencing) AddDevices(ctx context.Context, id string, cond *query.Query, deviceIDs []string, now time.Time) (int64, error) {
	return f.of(id).AddDevices(ctx, id, cond, deviceIDs, now)
}

func (f fencing) InterruptRunning(ctx context.Context, id string, devErr herd.DeviceJobError, now time.Time) (int, error) {
	return f.of(id).InterruptRunning(ctx, id, devErr, now)
}

// take leases a job to this node and returns the epoch with the job as
// the store has it once taken; epoch 0 (and no error) if another node
// holds it.
func (s *Service) take(ctx context.Context, id string) (int64, *Record, error) {
	now := s.clock.Now()
	epoch, err := s.cfg.Leases.TakeJob(ctx, id, now, now.Add(s.cfg.Lease))
	if err != nil || epoch == 0 {
		return 0, nil, err
	}
	s.mu.Lock()
	s.leased[id] = epoch
	s.mu.Unlock()
	// Read after the take: what the node that held it before did is in.
	r, err := s.store.Job(ctx, id)
	if err != nil {
		s.release(ctx, id, epoch)
		return 0, nil, err
	}
	s.log.Debug("job lease taken", "job_id", id, "epoch", epoch)
	return epoch, r, nil
}

// release hands a job's lease back (its runner ended) and forgets it. A
// node that stops tells the others, so that one takes the job at once.
func (s *Service) release(ctx context.Context, id string, epoch int64) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.cfg.Leases.ReleaseJob(rctx, id, epoch); err != nil {
		s.log.Warn("job: could not hand the job's lease back; another node takes it when it lapses", "job_id", id, "err", err)
	}
	s.mu.Lock()
	if s.leased[id] == epoch {
		delete(s.leased, id)
	}
	s.mu.Unlock()
	if ctx.Err() != nil && s.cfg.Announce != nil {
		s.cfg.Announce()
	}
}

// holding runs fn, a write about a job no runner of this node runs, under
// the job's lease: taken for fn and handed back after (nothing is done if
// another node holds it: that node looks after the job). Without leases
// it just runs fn.
func (s *Service) holding(ctx context.Context, id string, fn func() error) error {
	if s.cfg.Leases == nil {
		return fn()
	}
	epoch, _, err := s.take(ctx, id)
	if err != nil || epoch == 0 {
		return err
	}
	defer s.release(ctx, id, epoch)
	if err := fn(); !errors.Is(err, ErrLeaseLost) {
		return err
	}
	return nil
}

// recoverTaken prepares a started method job whose lease this node has
// just taken: the calls that the node running it before had in flight
// (it was killed, frozen or cut off, or it is this node restarted) are
// failed, never sent again. A hub alone does that for every job as its
// engine starts (recover).
func (s *Service) recoverTaken(ctx context.Context, r *Record) error {
	if s.cfg.Leases == nil || r.Type != herd.JobDeviceMethod || r.Started.IsZero() || r.EndTime != nil {
		return nil
	}
	n, err := s.store.InterruptRunning(ctx, r.JobID, herd.DeviceJobError{
		Code: ErrCodeInterrupted,
		Description: "The node running this job stopped or lost the job while this method call was in flight (it may or may not have reached the device). " +
			"It was not sent again, so that no device runs a job's method twice.",
	}, s.clock.Now())
	if n > 0 {
		s.log.Warn("method calls interrupted by the loss of the node running the job", "job_id", r.JobID, "op", "recover", "devices", n)
	}
	return err
}

// renewLeases renews the leases this node holds every third of the lease,
// until ctx ends, and stops the runner of each job whose lease another
// node took (the store refuses its writes from then on anyway).
func (s *Service) renewLeases(ctx context.Context) {
	for {
		tick := make(chan struct{})
		t := s.clock.AfterFunc(s.cfg.Lease/3, func() { close(tick) })
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-tick:
		}
		s.mu.Lock()
		held := make(map[string]int64, len(s.leased))
		for id, e := range s.leased {
			held[id] = e
		}
		s.mu.Unlock()
		if len(held) == 0 {
			continue
		}
		lost, err := s.cfg.Leases.RenewJobs(ctx, held, s.clock.Now().Add(s.cfg.Lease))
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("job: could not renew this node's job leases; trying again", "jobs", len(held), "err", err)
			}
			continue
		}
		for _, id := range lost {
			s.mu.Lock()
			run := s.runners[id]
			same := s.leased[id] == held[id]
			s.mu.Unlock()
			if run != nil && same {
				s.log.Warn("job: this node's lease of the job was taken by another node", "job_id", id, "epoch", held[id])
				run.cancel(errLeaseLost)
			}
		}
	}
}
