package job

import (
	"context"
	"errors"
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
	// writing counts the store writes in flight that may end devices,
	// by job: a stream of device events waits for them before its end.
	writing map[string]int

	// relay, if not nil, is told of every note taken here (not of those
	// applied from elsewhere): the other nodes of a cluster apply them.
	relay func(ProgressEvent)
}

// ProgressEvent is one note of the broadcaster (a write of a job began,
// ended what Ended selects, or the job changed), relayed between the
// nodes of a cluster: the node running a job writes, every node has
// watchers (GET /jobs/v2/{id}/events).
type ProgressEvent struct {
	JobID string          `json:"jobId"`
	Kind  string          `json:"kind"` // "begin", "end" or "changed"
	Ended *EndedSelection `json:"ended,omitempty"`
}

func (p *progress) send(ev ProgressEvent) {
	if p.relay != nil {
		p.relay(ev)
	}
}

// ApplyProgress applies a note relayed from another node.
func (s *Service) ApplyProgress(ev ProgressEvent) {
	switch ev.Kind {
	case "begin":
		s.progress.beginHere(ev.JobID)
	case "end":
		s.progress.endHere(ev.JobID, ev.Ended)
	case "changed":
		s.progress.changedHere(ev.JobID)
	}
}

// maxEnded bounds the writes a device watch holds unread; past it the
// watch is lagged (it lost device events).
const maxEnded = 4096

// watchers are the watches of one job.
type watchers struct {
	subs    map[*Watch]struct{}
	last    time.Time // when they were last signalled
	pending bool      // a coalesced signal is scheduled
}

func newProgress(c clock.Clock) *progress {
	return &progress{clock: c, done: make(chan struct{}), jobs: map[string]*watchers{}, writing: map[string]int{}}
}

// Watch is a subscription to one job's progress. A value on C means the
// job changed since the last one (or since Watch); read the job to see
// how. Close it when done.
type Watch struct {
	p  *progress
	id string
	c  chan struct{}
	// With devices, the watch also collects what each write ended
	// (under p.mu); lagged says some were dropped.
	devices bool
	ended   []EndedSelection
	lagged  bool
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
func (s *Service) Watch(id string) *Watch { return s.watch(id, false) }

func (s *Service) watch(id string, devices bool) *Watch {
	p := s.progress
	w := &Watch{p: p, id: id, c: make(chan struct{}, 1), devices: devices}
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
	p.changedHere(id)
	p.send(ProgressEvent{JobID: id, Kind: "changed"})
}

func (p *progress) changedHere(id string) {
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

// begin counts a store write in flight that may end devices of a job.
func (p *progress) begin(id string) {
	p.beginHere(id)
	p.send(ProgressEvent{JobID: id, Kind: "begin"})
}

func (p *progress) beginHere(id string) {
	p.mu.Lock()
	p.writing[id]++
	p.mu.Unlock()
}

// end counts the write over, hands what it ended (sel, nil for nothing)
// to the job's device watches and signals the job's watchers.
func (p *progress) end(id string, sel *EndedSelection) {
	p.endHere(id, sel)
	p.send(ProgressEvent{JobID: id, Kind: "end", Ended: sel})
}

func (p *progress) endHere(id string, sel *EndedSelection) {
	p.mu.Lock()
	if p.writing[id]--; p.writing[id] <= 0 {
		delete(p.writing, id)
	}
	if jw := p.jobs[id]; jw != nil && sel != nil {
		for w := range jw.subs {
			switch {
			case !w.devices:
			case len(w.ended) < maxEnded:
				w.ended = append(w.ended, *sel)
			default:
				w.lagged = true
			}
		}
	}
	p.mu.Unlock()
	p.changedHere(id)
}

// takeEnded returns and forgets what writes ended since the last call,
// whether some were dropped, and how many writes of the job are in
// flight.
func (w *Watch) takeEnded() ([]EndedSelection, bool, int) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	sels, lagged := w.ended, w.lagged
	w.ended, w.lagged = nil, false
	return sels, lagged, w.p.writing[w.id]
}

// forgetWriting forgets the writes of an ended job still counted in
// flight: their ends were lost.
func (p *progress) forgetWriting(id string) {
	p.mu.Lock()
	delete(p.writing, id)
	p.mu.Unlock()
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
	n.p.begin(id)
	defer n.p.end(id, &EndedSelection{At: now})
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
	n.p.begin(id)
	defer n.p.end(id, &EndedSelection{At: now})
	return n.Store.AbortJob(ctx, id, reason, now)
}

func (n notifying) ApplyTwinBatch(ctx context.Context, id string, p twin.Patch, after string, limit int, now time.Time) (TwinBatchResult, error) {
	n.p.begin(id)
	res, err := n.Store.ApplyTwinBatch(ctx, id, p, after, limit, now)
	var sel *EndedSelection
	if err == nil && len(res.Updated)+res.Failed > 0 {
		sel = &EndedSelection{At: now, After: after, Last: res.Next}
	}
	n.p.end(id, sel)
	return res, err
}

func (n notifying) ClaimDevices(ctx context.Context, id string, deviceIDs []string, now time.Time) ([]string, error) {
	defer n.p.changed(id)
	return n.Store.ClaimDevices(ctx, id, deviceIDs, now)
}

func (n notifying) FinishDevices(ctx context.Context, id string, outcomes []Outcome, now time.Time) error {
	n.p.begin(id)
	err := n.Store.FinishDevices(ctx, id, outcomes, now)
	var sel *EndedSelection
	if err == nil && len(outcomes) > 0 {
		ids := make([]string, len(outcomes))
		for i, o := range outcomes {
			ids[i] = o.DeviceID
		}
		sel = &EndedSelection{At: now, IDs: ids}
	}
	n.p.end(id, sel)
	return err
}

func (n notifying) ExpireJob(ctx context.Context, id string, end herd.JobStatus, reason string, devErr herd.DeviceJobError, now time.Time) error {
	n.p.begin(id)
	defer n.p.end(id, &EndedSelection{At: now})
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
	n.p.begin(id)
	defer n.p.end(id, &EndedSelection{At: now})
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
	return s.followJobProgress(ctx, id, idleEvery, idle, fn, nil)
}

// FollowDevices is Follow that also calls devices with the records of the
// job's devices that end (completed, failed, canceled) after the first
// call of fn, read from the store once the write that ended them has
// committed, each before the call of fn that counts it: every such
// device once, the last before fn's last call. lagged says that device
// records were dropped because devices was called too slowly (the
// watch holds at most maxEnded writes unread); records is then nil.
func (s *Service) FollowDevices(ctx context.Context, id string, idleEvery time.Duration, idle func() error,
	fn func(j *herd.Job, ended bool) error, devices func(records []herd.DeviceJob, lagged bool) error) error {
	return s.followJobProgress(ctx, id, idleEvery, idle, fn, devices)
}

// endedPage is how many device records one read of a device watch takes.
const endedPage = 1000

func (s *Service) followJobProgress(ctx context.Context, id string, idleEvery time.Duration, idle func() error,
	fn func(j *herd.Job, ended bool) error, devices func([]herd.DeviceJob, bool) error) error {
	w := s.watch(id, devices != nil)
	defer w.Close()
	beat := time.NewTicker(idleEvery)
	defer beat.Stop()
	// waitChange waits for the next change signal, or for giveUp to
	// close (nil: never); false when the stream should end quietly (ctx
	// or the engine stopped) or giveUp closed.
	waitChange := func(giveUp <-chan struct{}) (bool, error) {
		for {
			select {
			case <-ctx.Done():
				return false, nil
			case <-w.Done():
				return false, nil
			case <-giveUp:
				return false, nil
			case <-beat.C:
				if err := idle(); err != nil {
					return false, err
				}
			case <-w.C():
				return true, nil
			}
		}
	}
	first := true
	for {
		if devices != nil && !first {
			if _, err := s.sendEnded(ctx, w, devices); err != nil {
				return err
			}
		}
		j, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		ended := Ended(j)
		if ended && devices != nil && !first {
			if err := s.drainEnded(ctx, w, devices, waitChange); errors.Is(err, errStreamEnded) {
				return nil
			} else if err != nil {
				return err
			}
		}
		first = false
		if err := fn(j, ended); err != nil || ended {
			return err
		}
		if ok, err := waitChange(nil); !ok {
			return err
		}
	}
}

// endedGrace bounds how long a device stream waits, once its job has
// ended, for the writes of the job still counted in flight. A write on
// this node ends within it; a write on another node of a cluster is known
// by the notes it relays over NATS, which are lost when that node is
// killed mid-write (or NATS restarts), and its end would never come.
const endedGrace = 10 * time.Second

// errStreamEnded tells followJobProgress to end quietly (ctx or the
// engine stopped).
var errStreamEnded = errors.New("stream ended")

// drainEnded hands over what the job's writes in flight end, once the job
// has ended: the write that ended it may still be handing over what it
// ended. Writes still counted after endedGrace are given up on: the
// stream says it lagged (device records may be missing), and ends.
func (s *Service) drainEnded(ctx context.Context, w *Watch, devices func([]herd.DeviceJob, bool) error,
	waitChange func(giveUp <-chan struct{}) (bool, error)) error {
	giveUp := make(chan struct{})
	t := s.clock.AfterFunc(endedGrace, func() { close(giveUp) })
	defer t.Stop()
	for {
		writing, err := s.sendEnded(ctx, w, devices)
		if err != nil || writing == 0 {
			return err
		}
		ok, err := waitChange(giveUp)
		if err != nil {
			return err
		}
		if !ok {
			select {
			case <-giveUp:
				s.log.Warn("job ended with writes still counted in flight (another node's notes lost?); the device stream may lack records",
					"job_id", w.id, "op", "follow", "writes", writing, "grace", endedGrace)
				w.p.forgetWriting(w.id)
				if _, err := s.sendEnded(ctx, w, devices); err != nil {
					return err
				}
				return devices(nil, true)
			default:
				return errStreamEnded
			}
		}
	}
}

// sendEnded reads the device records that writes ended since the last
// call and hands them to devices; it returns how many writes of the job
// were in flight when it looked.
func (s *Service) sendEnded(ctx context.Context, w *Watch, devices func([]herd.DeviceJob, bool) error) (int, error) {
	sels, lagged, writing := w.takeEnded()
	if lagged {
		if err := devices(nil, true); err != nil {
			return writing, err
		}
	}
	for _, sel := range sels {
		cursor := ""
		for {
			recs, err := s.store.EndedDevices(ctx, w.id, sel, cursor, endedPage)
			if err != nil {
				return writing, err
			}
			if len(recs) > 0 {
				if err := devices(recs, false); err != nil {
					return writing, err
				}
			}
			if len(recs) < endedPage {
				break
			}
			cursor = recs[len(recs)-1].DeviceID
		}
	}
	return writing, nil
}
