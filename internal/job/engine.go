package job

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/herd-iot/herd"
)

// runner is one job being run.
type runner struct {
	id string
	// stop ends the job's feeding (cancel, deadline or shutdown); the
	// cause says which.
	stop context.CancelCauseFunc
	feed context.Context
	// calls is what method calls run under: it outlives the engine's
	// context by the grace period (Config.Grace).
	calls  context.Context
	cancel func(cause error)
}

// Run runs the engine until ctx ends: it first recovers the jobs a
// previous run left (methods that were in flight fail, running jobs resume
// from their pending devices; a store failure is tried again after a
// pause), then starts each job at its start time, and purges job history
// older than the retention period. It returns nil when ctx ends. With
// leases (Config.Leases) it runs only the jobs it holds the lease of, and
// recovers each as it takes it.
//
// Method calls in flight when ctx ends are given Config.Grace to finish
// (no new one starts); Run returns once their outcomes are written and,
// with leases, the jobs handed back. Watchers (Watch, Follow) then learn
// that the engine stopped.
func (s *Service) Run(ctx context.Context) error {
	defer s.progress.close()
	calls, stopCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCalls()
	// A wall-clock bound even on a fake Clock: it bounds a shutdown.
	defer context.AfterFunc(ctx, func() {
		if s.cfg.Grace <= 0 {
			stopCalls()
			return
		}
		time.AfterFunc(s.cfg.Grace, stopCalls)
	})()
	// A store that fails the recovery (PostgreSQL restarting as the hub
	// starts) is tried again after a pause, as later store failures are:
	// the hub stays up, and says it is not ready while the store is away.
	// With leases, the node that takes a job recovers it (recoverTaken).
	for s.cfg.Leases == nil {
		err := s.recover(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		s.log.Error("job engine: recovering the jobs of the previous run failed; trying again", "op", "recover", "err", err, "pause", retryPause)
		if !s.sleep(ctx, retryPause) {
			return nil
		}
	}
	var wg sync.WaitGroup
	if s.cfg.Leases != nil {
		// The leases are renewed until every runner has ended: a node
		// that shuts down holds its jobs while their calls finish.
		renew, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			s.renewLeases(renew)
		}()
		defer func() {
			stopRenew()
			<-renewed
		}()
	}
	defer wg.Wait()
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.retain(ctx)
	}()
	go func() {
		defer wg.Done()
		s.runFollower(ctx)
	}()
	for {
		next, err := s.schedule(ctx, calls, &wg)
		if err != nil && ctx.Err() == nil {
			s.log.Error("job scheduler", "op", "schedule", "err", err)
			next = s.clock.Now().Add(time.Second) // try again shortly
		}
		var timer interface{ Stop() bool }
		if !next.IsZero() {
			timer = s.clock.AfterFunc(next.Sub(s.clock.Now()), s.poke)
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-s.wake:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// schedule starts every job that is due and not running yet, marks future
// ones scheduled, and returns the earliest future start (zero if none).
func (s *Service) schedule(ctx, calls context.Context, wg *sync.WaitGroup) (time.Time, error) {
	jobs, err := s.store.ActiveJobs(ctx)
	if err != nil {
		return time.Time{}, err
	}
	now := s.clock.Now()
	var next time.Time
	for _, r := range jobs {
		s.mu.Lock()
		_, running := s.runners[r.JobID]
		s.mu.Unlock()
		if running {
			continue
		}
		if r.Status == herd.JobPaused {
			// A paused job starts no device; a started one still fails at
			// its deadline.
			if r.Started.IsZero() {
				continue
			}
			if deadline := r.Deadline(); deadline.After(now) {
				if next.IsZero() || deadline.Before(next) {
					next = deadline
				}
				continue
			}
			s.log.Info("job deadline passed while paused", "job_id", r.JobID)
			if err := s.holding(ctx, r.JobID, func() error {
				return s.store.ExpireJob(ctx, r.JobID, deadlineEnd(r), deadlineReason(r), deadlineError(r), now)
			}); err != nil {
				return time.Time{}, err
			}
			continue
		}
		if r.Status == herd.JobQueued || r.Status == herd.JobScheduled {
			if start := r.StartTime.Time; start.After(now) {
				if r.Status == herd.JobQueued {
					if err := s.store.ScheduleJob(ctx, r.JobID, now); err != nil {
						return time.Time{}, err
					}
				}
				if next.IsZero() || start.Before(next) {
					next = start
				}
				continue
			}
		}
		launched, err := s.launch(ctx, calls, wg, r)
		if err != nil {
			return time.Time{}, err
		}
		if !launched {
			// Another node runs it: look again in a third of a lease, in
			// case that node is gone by then (the store lets a node take
			// the job of a node that is gone before its lease lapses).
			if at := now.Add(s.cfg.Lease / 3); next.IsZero() || at.Before(next) {
				next = at
			}
		}
	}
	return next, nil
}

// launch starts a runner for a job; with leases, only once this node
// holds the job's lease: false if another node took it first.
func (s *Service) launch(ctx, calls context.Context, wg *sync.WaitGroup, r *Record) (bool, error) {
	var epoch int64
	if s.cfg.Leases != nil {
		var err error
		if epoch, r, err = s.take(ctx, r.JobID); err != nil || epoch == 0 {
			return false, err
		}
	} else {
		// The pass's list may be older than the end of a runner that
		// removed itself since: read the job again, so that a job that
		// has ended is not started, nor logged as ended, a second time.
		fresh, err := s.store.Job(ctx, r.JobID)
		if herd.IsCode(err, herd.ErrJobNotFound) || err == nil && fresh.EndTime != nil {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		r = fresh
	}
	feed, stop := context.WithCancelCause(ctx)
	run := &runner{id: r.JobID, feed: feed, calls: calls, stop: stop, cancel: stop}
	s.mu.Lock()
	s.runners[r.JobID] = run
	s.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := s.recoverTaken(ctx, r)
		if err == nil {
			err = s.runJob(ctx, run, r)
		}
		stop(nil)
		lost := errors.Is(err, ErrLeaseLost) || context.Cause(feed) == errLeaseLost
		if lost {
			s.log.Warn("job: another node took this job's lease; this node stopped running it", "job_id", r.JobID, "epoch", epoch)
			err = nil
		} else if err == nil && ctx.Err() == nil {
			s.logEnded(ctx, r.JobID)
		}
		done := func() {
			if s.cfg.Leases != nil {
				s.release(ctx, r.JobID, epoch)
			}
			s.mu.Lock()
			delete(s.runners, r.JobID)
			s.mu.Unlock()
			s.poke()
		}
		if err == nil || ctx.Err() != nil {
			done()
			return
		}
		// A store failure: the job stays as it was (every change is
		// transactional) and is tried again after a pause, not in a
		// tight loop.
		s.log.Error("job failed to run; retrying", "job_id", r.JobID, "op", "run", "err", err)
		s.clock.AfterFunc(retryPause, done)
	}()
	return true, nil
}

// logEnded writes the log line of a job that has ended: its status,
// counts and how long it ran.
func (s *Service) logEnded(ctx context.Context, id string) {
	r, err := s.store.Job(ctx, id)
	if err != nil || r.EndTime == nil {
		return // not ended (shutdown), or already purged
	}
	st := r.DeviceJobStatistics
	began := r.Started
	if began.IsZero() && r.CreatedTime != nil {
		began = r.CreatedTime.Time
	}
	args := []any{"job_id", id, "op", string(r.Type), "status", string(r.Status),
		"devices", st.DeviceCount, "succeeded", st.SucceededCount, "failed", st.FailedCount,
		"duration_ms", max(r.EndTime.Sub(began), 0).Milliseconds()}
	if r.FailureReason != "" {
		args = append(args, "reason", r.FailureReason)
	}
	s.log.Info("job ended", args...)
}

// retryPause is how long a job whose run failed on a store error waits
// before it is tried again.
const retryPause = 5 * time.Second

// runJob starts a job if needed and works through its devices until they
// are done, the job is cancelled, its deadline passes or ctx ends. A
// continuous job's devices are never done: once those it has are, it
// waits for the follower to add more.
func (s *Service) runJob(ctx context.Context, run *runner, r *Record) error {
	var follow *followed
	if continuous(r) {
		// A condition that does not parse fails the job in start.
		if cond, err := parseWhere(r.QueryCondition); err == nil {
			var unfollow func()
			follow, unfollow = s.followJob(r.JobID, cond, !r.Started.IsZero())
			defer unfollow()
		}
	}
	if r.Status == herd.JobQueued || r.Status == herd.JobScheduled {
		started, err := s.start(ctx, r)
		if err != nil || started == nil {
			return err
		}
		r = started
	}
	if r.EndTime != nil {
		return nil // completed at once (no devices), or cancelled meanwhile
	}
	deadline := s.clock.AfterFunc(r.Deadline().Sub(s.clock.Now()), func() { run.stop(errDeadline) })
	defer deadline.Stop()
	// The steer may abort at once: the job crossed a threshold just
	// before it last stopped. The run then ends as for a cancel.
	st, err := s.newSteer(ctx, r, run.stop)
	if err != nil {
		return err
	}
	if r.Type != herd.JobUpdateTwin && r.Type != herd.JobDeviceMethod {
		return s.store.FailJob(ctx, r.JobID, fmt.Sprintf("job type %q cannot run", r.Type), s.clock.Now())
	}
	for {
		err = s.runWaves(ctx, run, r, func(limit int64) error {
			if r.Type == herd.JobUpdateTwin {
				return s.runTwin(ctx, run.feed, r, st, limit)
			}
			return s.runMethod(ctx, run, r, st, limit)
		})
		if err != nil || run.feed.Err() != nil || follow == nil {
			break
		}
		select {
		case <-follow.more:
		case <-run.feed.Done():
		}
	}
	if err != nil && run.feed.Err() == nil {
		return err
	}
	if context.Cause(run.feed) == errDeadline {
		s.log.Info("job deadline passed", "job_id", r.JobID, "continuous", follow != nil)
		return s.store.ExpireJob(context.WithoutCancel(ctx), r.JobID, deadlineEnd(r), deadlineReason(r), deadlineError(r), s.clock.Now())
	}
	return nil
}

// continuous says whether a job runs until its deadline (herd.continuous).
func continuous(r *Record) bool { return r.Herd != nil && r.Herd.Continuous }

// deadlineEnd is the status a job ends with at its deadline: a continuous
// job completes (its deadline is its end), another fails.
func deadlineEnd(r *Record) herd.JobStatus {
	if continuous(r) {
		return herd.JobCompleted
	}
	return herd.JobFailed
}

func deadlineReason(r *Record) string {
	return fmt.Sprintf("The job did not finish within maxExecutionTimeInSeconds (%d s); the devices not done by then failed.", r.MaxExecutionTimeInSeconds)
}

// start compiles the query condition and snapshots the target devices. It
// returns nil (and no error) when the job did not start: it failed (a bad
// condition) or was cancelled meanwhile.
func (s *Service) start(ctx context.Context, r *Record) (*Record, error) {
	now := s.clock.Now()
	if r.Type == herd.JobDeviceMethod && s.cfg.Methods == nil {
		return nil, s.store.FailJob(ctx, r.JobID, "This hub has no device gateway, so it cannot invoke direct methods.", now)
	}
	cond, err := parseWhere(r.QueryCondition)
	if err != nil {
		return nil, s.store.FailJob(ctx, r.JobID, fmt.Sprintf("The queryCondition is not valid: %s", herd.ErrorMessage(err)), now)
	}
	started, err := s.store.StartJob(ctx, r.JobID, cond, now)
	if herd.IsCode(err, herd.ErrArgumentInvalid) {
		return nil, s.store.FailJob(ctx, r.JobID, herd.ErrorMessage(err), now)
	}
	if err != nil {
		return nil, err
	}
	if started.Status != herd.JobRunning && started.EndTime == nil {
		return nil, nil
	}
	// The delay counts from when the job became due: a job created with
	// a start time in the past was due when it was created.
	due := r.StartTime.Time
	if r.CreatedTime != nil && r.CreatedTime.After(due) {
		due = r.CreatedTime.Time
	}
	s.metrics.startDelay.Observe(max(now.Sub(due), 0).Seconds())
	st := started.DeviceJobStatistics
	s.log.Info("job started", "job_id", r.JobID, "op", string(r.Type), "devices", st.DeviceCount,
		"delay_ms", now.Sub(r.StartTime.Time).Milliseconds())
	return started, nil
}

// recover prepares the jobs a previous run left unfinished: method calls
// that were in flight when the hub stopped are failed (they are not sent
// again: a method runs at most once per device); pending devices are
// resumed by the scheduler.
func (s *Service) recover(ctx context.Context) error {
	jobs, err := s.store.ActiveJobs(ctx)
	if err != nil {
		return err
	}
	for _, r := range jobs {
		if r.Type != herd.JobDeviceMethod || r.Started.IsZero() {
			continue
		}
		n, err := s.store.InterruptRunning(ctx, r.JobID, herd.DeviceJobError{
			Code: ErrCodeInterrupted,
			Description: "The hub stopped while this method call was in flight (it may or may not have reached the device). " +
				"It was not sent again, so that no device runs a job's method twice.",
		}, s.clock.Now())
		if err != nil {
			return err
		}
		if n > 0 {
			s.log.Warn("method calls interrupted by a restart", "job_id", r.JobID, "op", "recover", "devices", n)
		}
	}
	return nil
}

// retain purges finished jobs older than the retention period, now and
// then every hour.
func (s *Service) retain(ctx context.Context) {
	for {
		n, err := s.store.PurgeJobs(ctx, s.clock.Now().Add(-s.cfg.Retention))
		if err != nil && ctx.Err() == nil {
			s.log.Error("purge old jobs", "op", "retention", "err", err)
		} else if n > 0 {
			s.log.Info("purged old jobs", "op", "retention", "jobs", n)
		}
		tick := make(chan struct{})
		t := s.clock.AfterFunc(time.Hour, func() { close(tick) })
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-tick:
		}
	}
}
