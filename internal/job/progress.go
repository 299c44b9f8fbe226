package job

import (
	"context"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/twin"
)

// ProgressEvery is the shortest interval between two progress
// notifications of one job: changes in between are coalesced into one,
// sent when the interval has passed, so a watcher hears at most four times
// a second per job however fast the engine commits batches, and always
// hears of the last change.
const ProgressEvery = 250 * time.Millisecond

// progress is the in-process broadcaster of job progress: the engine's
// store writes (notifying, below) tell it that a job changed, and it
// signals the job's watchers, coalesced to one signal per ProgressEvery. A
// change of a job nobody watches costs one map lookup.
type progress struct {
	clock clock.Clock
	done  chan struct{}
	stop  sync.Once

	mu   sync.Mutex
	jobs map[string]*watchers
}

// watchers are the watches of one job.
type watchers struct {
	subs    map[*Watch]struct{}
	last    time.Time // when they were last signalled
	pending bool      // a coalesced signal is scheduled
}

func newProgress(c clock.Clock) *progress {
	return &progress{clock: c, done: make(chan struct{}), jobs: map[string]*watchers{}}
}

// Watch is a subscription to one job's progress. A value on C means the
// job changed since the last one (or since Watch); read the job to see
// how. Close it when done.
type Watch struct {
	p  *progress
	id string
	c  chan struct{}
}

// C delivers change signals; several changes arrive as one.
func (w *Watch) C() <-chan struct{} { return w.c }

// Done is closed when the engine stops (the hub shuts down): no more
// signals will come.
func (w *Watch) Done() <-chan struct{} { return w.p.done }

// Close ends the subscription.
func (w *Watch) Close() {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if jw := p.jobs[w.id]; jw != nil {
		delete(jw.subs, w)
		if len(jw.subs) == 0 {
			delete(p.jobs, w.id)
		}
	}
}

// Watch subscribes to a job's progress notifications (GET
// /jobs/v2/{id}/events). It does not check that the job exists:
// subscribe first, then read the job, so that no change falls between
// the two.
func (s *Service) Watch(id string) *Watch {
	p := s.progress
	w := &Watch{p: p, id: id, c: make(chan struct{}, 1)}
	p.mu.Lock()
	defer p.mu.Unlock()
	jw := p.jobs[id]
	if jw == nil {
		jw = &watchers{subs: map[*Watch]struct{}{}}
		p.jobs[id] = jw
	}
	jw.subs[w] = struct{}{}
	return w
}

// changed records that a job's stored state changed: its watchers are
// signalled now, or once ProgressEvery has passed since the last signal.
func (p *progress) changed(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	jw := p.jobs[id]
	if jw == nil || jw.pending {
		return
	}
	now := p.clock.Now()
	if wait := jw.last.Add(ProgressEvery).Sub(now); wait > 0 {
		jw.pending = true
		p.clock.AfterFunc(wait, func() { p.flush(id) })
		return
	}
	jw.signal(now)
}

// flush sends a coalesced signal.
func (p *progress) flush(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if jw := p.jobs[id]; jw != nil {
		jw.pending = false
		jw.signal(p.clock.Now())
	}
}

func (jw *watchers) signal(now time.Time) {
	jw.last = now
	for w := range jw.subs {
		select {
		case w.c <- struct{}{}:
		default: // a signal is already waiting to be read
		}
	}
}

// close ends every watch's Done (the engine stopped).
func (p *progress) close() { p.stop.Do(func() { close(p.done) }) }

// notifying is the engine's view of the store: every write that changes
// a job's status or statistics tells the broadcaster after it returns.
// Reads, and methods added to Store later, pass through unchanged.
type notifying struct {
	Store
	p *progress
}

func (n notifying) ScheduleJob(ctx context.Context, id string, now time.Time) error {
	defer n.p.changed(id)
	return n.Store.ScheduleJob(ctx, id, now)
}

func (n notifying) StartJob(ctx context.Context, id string, cond *query.Query, now time.Time) (*Record, error) {
	defer n.p.changed(id)
	return n.Store.StartJob(ctx, id, cond, now)
}

func (n notifying) FailJob(ctx context.Context, id, reason string, now time.Time) error {
	defer n.p.changed(id)
	return n.Store.FailJob(ctx, id, reason, now)
}

func (n notifying) CancelJob(ctx context.Context, id string, now time.Time) (*Record, error) {
	defer n.p.changed(id)
	return n.Store.CancelJob(ctx, id, now)
}

func (n notifying) PauseJob(ctx context.Context, id string, now time.Time) (*Record, error) {
	defer n.p.changed(id)
	return n.Store.PauseJob(ctx, id, now)
}

func (n notifying) ResumeJob(ctx context.Context, id string, now time.Time) (*Record, error) {
	defer n.p.changed(id)
	return n.Store.ResumeJob(ctx, id, now)
}

func (n notifying) AdvanceWave(ctx context.Context, id string, wave int, pause bool, now time.Time) (*Record, error) {
	defer n.p.changed(id)
	return n.Store.AdvanceWave(ctx, id, wave, pause, now)
}

func (n notifying) AbortJob(ctx context.Context, id, reason string, now time.Time) (*Record, error) {
	defer n.p.changed(id)
	return n.Store.AbortJob(ctx, id, reason, now)
}

func (n notifying) ApplyTwinBatch(ctx context.Context, id string, p twin.Patch, after string, limit int, now time.Time) (TwinBatchResult, error) {
	defer n.p.changed(id)
	return n.Store.ApplyTwinBatch(ctx, id, p, after, limit, now)
}

func (n notifying) ClaimDevices(ctx context.Context, id string, deviceIDs []string, now time.Time) ([]string, error) {
	defer n.p.changed(id)
	return n.Store.ClaimDevices(ctx, id, deviceIDs, now)
}

func (n notifying) FinishDevices(ctx context.Context, id string, outcomes []Outcome, now time.Time) error {
	defer n.p.changed(id)
	return n.Store.FinishDevices(ctx, id, outcomes, now)
}

func (n notifying) ExpireJob(ctx context.Context, id string, end herd.JobStatus, reason string, devErr herd.DeviceJobError, now time.Time) error {
	defer n.p.changed(id)
	return n.Store.ExpireJob(ctx, id, end, reason, devErr, now)
}

func (n notifying) AddDevices(ctx context.Context, id string, cond *query.Query, deviceIDs []string, now time.Time) (int64, error) {
	added, err := n.Store.AddDevices(ctx, id, cond, deviceIDs, now)
	if added > 0 {
		n.p.changed(id)
	}
	return added, err
}

func (n notifying) InterruptRunning(ctx context.Context, id string, devErr herd.DeviceJobError, now time.Time) (int, error) {
	defer n.p.changed(id)
	return n.Store.InterruptRunning(ctx, id, devErr, now)
}

// Ended reports whether a job will not change any more: its status is
// terminal and its end time set (a cancelled job's running devices finish
// first).
func Ended(j *herd.Job) bool { return j.Status.Terminal() && j.EndTime != nil }

// Follow calls fn with the job as it is and again after each change the
// engine reports (coalesced, at most one per ProgressEvery), until the job
// has ended (fn's last call has ended true), ctx ends or the engine stops.
// Between changes, idle is called every idleEvery (stream keep-alives). An
// error from Get before the first call (an unknown job) is returned
// before fn is called; a later one ends Follow with it; an error from fn
// or idle ends Follow with that error. Nothing polls: the job is read
// only when it changed.
func (s *Service) Follow(ctx context.Context, id string, idleEvery time.Duration, idle func() error, fn func(j *herd.Job, ended bool) error) error {
	w := s.Watch(id)
	defer w.Close()
	beat := time.NewTicker(idleEvery)
	defer beat.Stop()
	for {
		j, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		ended := Ended(j)
		if err := fn(j, ended); err != nil || ended {
			return err
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-w.Done():
				return nil
			case <-beat.C:
				if err := idle(); err != nil {
					return err
				}
			case <-w.C():
				break wait
			}
		}
	}
}
