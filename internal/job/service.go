package job

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/twin"
)

// Methods is what method jobs need from direct methods (internal/method
// over internal/bus).
type Methods interface {
	// Online reports whether a device is connected and subscribed to
	// methods now.
	Online(deviceID string) bool
	// WaitOnline returns nil once the device is online for methods, or
	// ctx's error if it ends first. It must not poll.
	WaitOnline(ctx context.Context, deviceID string) error
	// Invoke calls a direct method on one device and waits for its answer
	// (errors: DeviceNotOnline after req.ConnectTimeoutInSeconds,
	// GatewayTimeout after req.ResponseTimeoutInSeconds, DeviceNotFound).
	Invoke(ctx context.Context, deviceID string, req herd.MethodRequest) (*herd.MethodResult, error)
}

// Notifier sends a committed desired change to a device (twin.Service),
// with where the batch saw the device connected.
type Notifier interface {
	Notify(deviceID string, where twin.Where, version int64, body []byte)
}

// Config configures the job service and its engine.
type Config struct {
	Store Store
	// Twins is told about desired changes after each twin batch commits.
	Twins Notifier
	// Changed, if set, is told about every twin a batch wrote, after the
	// batch commits (automatic device configurations follow tags with
	// it); it must not block.
	Changed func(deviceID string)
	// Relay, if set, is told of each progress note of this node's job
	// writes, for the other nodes of a cluster (ApplyProgress).
	Relay func(ProgressEvent)
	// Announce, if set, is told after a job was created, cancelled,
	// paused or resumed here, or handed back as this engine stopped: in a
	// cluster, the node that runs the job may be another (it calls
	// Refresh).
	Announce func()
	// Methods invokes direct methods; nil means method jobs fail with a
	// reason saying that the hub has no device gateway.
	Methods Methods
	Clock   clock.Clock
	Log     *slog.Logger
	// MaxInFlight caps the device operations in flight across all jobs
	// (method calls awaiting an answer, twins in an open batch).
	MaxInFlight int
	// MaxWaiting caps the offline devices waited for at once across all
	// method jobs (each costs a small goroutine).
	MaxWaiting int
	// TwinBatch is how many twins one transaction patches (0: what the
	// store says, TwinBatching, else DefaultTwinBatch).
	TwinBatch int
	// TwinWorkers is how many batches of one twin job are in flight at
	// once (0: what the store says, TwinBatching, else 1).
	TwinWorkers int
	// Retention is how long finished jobs are kept.
	Retention time.Duration
	// Targets counts and samples the devices a condition selects, for
	// Preview (nil: Preview is not available).
	Targets Targets
	// Metrics, if not nil, is where the engine registers its collectors.
	Metrics prometheus.Registerer
	// ProgressClock paces the job change notifications (Watch, Follow:
	// at most one per ProgressEvery); nil means the wall clock. The pace
	// is about how often watchers are told, not the jobs' own time, so
	// an engine on a fake Clock still tells its watchers in real time
	// unless this is set too.
	ProgressClock clock.Clock
	// Grace is how long the method calls in flight when Run's context
	// ends may go on to finish, so that their outcomes are recorded
	// (a node draining on SIGTERM); no new call starts meanwhile. Calls
	// still in flight after it are cut off, and the next start records them
	// MethodInterrupted. 0 cuts them off at once.
	Grace time.Duration
	// ContinuousRescan is how often a continuous job looks for matching
	// devices over the whole fleet, besides following device changes
	// (0: DefaultContinuousRescan).
	ContinuousRescan time.Duration
	// Leases, if not nil, shares the jobs with the engines of the other
	// nodes of a cluster: this engine runs a job only while it holds its
	// lease (taken for Lease, renewed every third of it), and writes
	// about the job only through the store fenced at the lease's epoch.
	// NodeID is this node's id, as Leases records it. Without Leases this
	// engine runs every job of its store (a hub alone).
	Leases Leases
	NodeID string
	Lease  time.Duration
}

// Defaults for Config.
const (
	DefaultMaxInFlight = 10000
	DefaultMaxWaiting  = 100000
	DefaultTwinBatch   = 2000
	DefaultRetention   = 30 * 24 * time.Hour
)

func (c *Config) defaults() {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxWaiting <= 0 {
		c.MaxWaiting = DefaultMaxWaiting
	}
	if tb, ok := c.Store.(TwinBatching); ok {
		size, writers := tb.TwinBatching()
		if c.TwinBatch <= 0 {
			c.TwinBatch = size
		}
		if c.TwinWorkers <= 0 {
			c.TwinWorkers = writers
		}
	}
	if c.TwinBatch <= 0 {
		c.TwinBatch = DefaultTwinBatch
	}
	c.TwinWorkers = max(c.TwinWorkers, 1)
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.ContinuousRescan <= 0 {
		c.ContinuousRescan = DefaultContinuousRescan
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.ProgressClock == nil {
		c.ProgressClock = clock.Real{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Service creates, reads, lists and cancels jobs, and (in Run) runs them.
type Service struct {
	cfg     Config
	store   Store
	clock   clock.Clock
	log     *slog.Logger
	slots   *limiter
	waiting chan struct{} // semaphore of MaxWaiting
	wake    chan struct{} // buffered 1: the scheduler should look again

	metrics  *metrics
	progress *progress // job change notifications (Watch)
	follow   *follower // device changes, for continuous jobs

	mu      sync.Mutex
	runners map[string]*runner // jobs being run, by id
	leased  map[string]int64   // with Leases: the epochs of the leases held, by job id
}

// Running is how many jobs this engine is running now.
func (s *Service) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.runners)
}

// RunningIDs are the jobs this engine is running now, in no order.
func (s *Service) RunningIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.runners))
	for id := range s.runners {
		ids = append(ids, id)
	}
	return ids
}

// New returns a job service. Jobs run only while Run runs.
func New(cfg Config) *Service {
	cfg.defaults()
	prog := newProgress(cfg.ProgressClock)
	prog.relay = cfg.Relay
	s := &Service{
		cfg: cfg, clock: cfg.Clock, log: cfg.Log, progress: prog,
		slots:   newLimiter(cfg.MaxInFlight),
		waiting: make(chan struct{}, cfg.MaxWaiting),
		wake:    make(chan struct{}, 1),
		runners: map[string]*runner{},
		leased:  map[string]int64{},
		follow:  newFollower(),
	}
	s.store = notifying{cfg.Store, prog}
	if cfg.Leases != nil {
		s.store = notifying{fencing{cfg.Store, s}, prog}
	}
	s.metrics = newMetrics(s, cfg.Metrics)
	return s
}

// Allow is asked, before a job is stored or cancelled, whether the caller
// may do what the job does; a non-nil error refuses the request. A nil
// Allow allows everything.
type Allow func(herd.JobType) error

// Create validates and stores a job (PUT /jobs/v2/{id}) and returns it,
// queued. A queryCondition that does not parse (or that the store cannot
// compile) is refused here with the parser's message (Azure accepts it and
// fails the job when it starts; see docs/jobs.md), so nothing is stored.
func (s *Service) Create(ctx context.Context, pathID string, body []byte, allow Allow) (*herd.Job, error) {
	r, err := ParseRequest(pathID, body, s.clock.Now())
	if err != nil {
		return nil, err
	}
	if allow != nil {
		if err := allow(r.Type); err != nil {
			return nil, err
		}
	}
	if _, err := parseWhere(r.QueryCondition); err != nil {
		return nil, herd.Errorf(herd.ErrArgumentInvalid, "queryCondition %q is not valid: %s", r.QueryCondition, herd.ErrorMessage(err))
	}
	if err := s.store.CreateJob(ctx, r); err != nil {
		return nil, err
	}
	s.log.Info("job created", "job_id", r.JobID, "op", string(r.Type), "start", r.StartTime.String())
	if now := s.clock.Now(); s.cfg.Leases != nil && !r.StartTime.After(now) {
		// A job due now runs on the node it was created on (unless that
		// node is lost first): the jobs of a cluster spread over its nodes
		// as their callers do, and the node that takes it is known. Its
		// engine takes the lease again when it launches the job.
		if _, err := s.cfg.Leases.TakeJob(ctx, r.JobID, now, now.Add(s.cfg.Lease)); err != nil {
			s.log.Warn("job: could not take the lease of the job created here; the first node to see it due runs it", "job_id", r.JobID, "err", err)
		}
	}
	s.announce()
	return &r.Job, nil
}

// Get returns a job.
func (s *Service) Get(ctx context.Context, id string) (*herd.Job, error) {
	r, err := s.store.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	return &r.Job, nil
}

// Cancel cancels a job: a job that has not started ends at once; a
// running job's pending devices are canceled and its running ones finish.
// A job that has ended is returned unchanged. allow is asked first with
// the job's type.
func (s *Service) Cancel(ctx context.Context, id string, allow Allow) (*herd.Job, error) {
	if err := s.check(ctx, id, allow); err != nil {
		return nil, err
	}
	r, err := s.store.CancelJob(ctx, id, s.clock.Now())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	run := s.runners[id]
	s.mu.Unlock()
	if run != nil {
		run.cancel(errCancelled) // the runner logs the end
	}
	s.log.Info("job cancelled", "job_id", id)
	if run == nil && r.EndTime != nil {
		s.logEnded(ctx, id) // it had not started
	}
	s.announce()
	return &r.Job, nil
}

// check asks allow (if not nil) whether the caller may change job id,
// given its type.
func (s *Service) check(ctx context.Context, id string, allow Allow) error {
	if allow == nil {
		return nil
	}
	r, err := s.store.Job(ctx, id)
	if err != nil {
		return err
	}
	return allow(r.Type)
}

// Pause pauses a job (POST /jobs/v2/{id}/pause): it starts no more
// devices until it is resumed; calls in flight finish, offline devices
// waited for stay pending, and the job's deadline keeps running. A job
// that has ended, or is ending, is returned unchanged. allow is asked
// first with the job's type.
func (s *Service) Pause(ctx context.Context, id string, allow Allow) (*herd.Job, error) {
	return s.setPaused(ctx, id, true, allow)
}

// Resume resumes a paused job (POST /jobs/v2/{id}/resume) from its
// pending devices; a job in another state is returned unchanged.
func (s *Service) Resume(ctx context.Context, id string, allow Allow) (*herd.Job, error) {
	return s.setPaused(ctx, id, false, allow)
}

func (s *Service) setPaused(ctx context.Context, id string, pause bool, allow Allow) (*herd.Job, error) {
	if err := s.check(ctx, id, allow); err != nil {
		return nil, err
	}
	var r *Record
	var err error
	if pause {
		r, err = s.store.PauseJob(ctx, id, s.clock.Now())
	} else {
		r, err = s.store.ResumeJob(ctx, id, s.clock.Now())
	}
	if err != nil {
		return nil, err
	}
	if pause && r.Status == herd.JobPaused {
		s.mu.Lock()
		run := s.runners[id]
		s.mu.Unlock()
		if run != nil {
			run.cancel(errPaused)
		}
		s.log.Info("job paused", "job_id", id)
	} else if !pause && r.Status != herd.JobPaused && r.EndTime == nil {
		s.log.Info("job resumed", "job_id", id)
	}
	s.announce()
	return &r.Job, nil
}

// ListQuery is a parsed GET /jobs/v2/query.
type ListQuery struct {
	// Type and Status as the caller wrote them; matched
	// case-insensitively ("" for any).
	Type, Status string
	// Continuation and PageSize page through the results.
	Continuation string
	PageSize     int
	// Newest lists the newest jobs first (the API lists in creation
	// order; the dashboard newest first).
	Newest bool
}

// MaxPageSize caps a page of jobs (§3.5).
const MaxPageSize = 100

// List returns a page of jobs and the continuation for the next page ("" on
// the last page).
func (s *Service) List(ctx context.Context, q ListQuery) ([]*herd.Job, string, error) {
	f := ListFilter{After: q.Continuation, Limit: q.PageSize, Newest: q.Newest}
	if f.Limit <= 0 || f.Limit > MaxPageSize {
		f.Limit = MaxPageSize
	}
	if q.Type != "" {
		t, ok := canonical(q.Type, []string{string(herd.JobDeviceMethod), string(herd.JobUpdateTwin)})
		if !ok {
			return []*herd.Job{}, "", nil
		}
		f.Type = herd.JobType(t)
	}
	if q.Status != "" {
		st, ok := canonical(q.Status, []string{"queued", "enqueued", "scheduled", "running", "paused", "completed", "failed", "cancelled", "canceled"})
		if !ok {
			return []*herd.Job{}, "", nil
		}
		switch st {
		case "enqueued":
			st = string(herd.JobQueued)
		case "canceled":
			st = string(herd.JobCancelled)
		}
		f.Status = herd.JobStatus(st)
	}
	rs, next, err := s.store.ListJobs(ctx, f)
	if err != nil {
		return nil, "", err
	}
	out := make([]*herd.Job, len(rs))
	for i, r := range rs {
		out[i] = &r.Job
	}
	return out, next, nil
}

// canonical returns the value of names that equals v case-insensitively.
func canonical(v string, names []string) (string, bool) {
	for _, n := range names {
		if strings.EqualFold(v, n) {
			return n, true
		}
	}
	return "", false
}

// parseWhere parses a queryCondition (the WHERE part of a twin query,
// "*" for every device) with the query language.
func parseWhere(cond string) (*query.Query, error) {
	q, err := query.ParseCondition(cond)
	if err != nil {
		return nil, query.AsHerdError(err)
	}
	return q, nil
}

// announce wakes the scheduler and tells Announce.
func (s *Service) announce() {
	s.poke()
	if s.cfg.Announce != nil {
		s.cfg.Announce()
	}
}

// Refresh is told that jobs changed in the store on another node (created,
// cancelled, paused, resumed): the jobs run here that were cancelled or
// paused stop as if it had been done here, and the scheduler wakes.
func (s *Service) Refresh(ctx context.Context) {
	s.mu.Lock()
	runs := make(map[string]*runner, len(s.runners))
	for id, r := range s.runners {
		runs[id] = r
	}
	s.mu.Unlock()
	for id, run := range runs {
		r, err := s.store.Job(ctx, id)
		if err != nil {
			continue // gone, or the store failed: the runner finds out itself
		}
		switch r.Status {
		case herd.JobCancelled:
			run.cancel(errCancelled)
		case herd.JobPaused:
			run.cancel(errPaused)
		}
	}
	s.poke()
}

// poke wakes the scheduler.
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Why a runner stops early.
var (
	errCancelled = errors.New("job cancelled")
	errDeadline  = errors.New("job deadline passed")
	errPaused    = errors.New("job paused")
	// errNotRunning: the store refused a claim because the job was no
	// longer running (a pause that raced with the runner's start).
	errNotRunning = errors.New("job not running")
	// errLeaseLost: another node took the job's lease (Leases).
	errLeaseLost = errors.New("job lease lost")
)

// notify sends the desired-change notifications of a twin batch.
func (s *Service) notify(body func(int64) []byte, updated []Updated) {
	for _, u := range updated {
		if s.cfg.Changed != nil {
			s.cfg.Changed(u.DeviceID)
		}
		s.DeviceChanged(u.DeviceID)
	}
	if body == nil || s.cfg.Twins == nil {
		return
	}
	for _, u := range updated {
		switch {
		case len(u.Cleared) > 0:
			s.cfg.Twins.Notify(u.DeviceID, u.Where, u.DesiredVersion, twin.ClearedNotification(u.Cleared, u.DesiredVersion))
		case u.DesiredVersion > 0:
			s.cfg.Twins.Notify(u.DeviceID, u.Where, u.DesiredVersion, body(u.DesiredVersion))
		}
	}
}

var _ Notifier = (*twin.Service)(nil)

func deadlineError(r *Record) herd.DeviceJobError {
	return herd.DeviceJobError{Code: ErrCodeDeadline, Description: fmt.Sprintf(
		"The job's maxExecutionTimeInSeconds (%d s) ran out before this device finished.", r.MaxExecutionTimeInSeconds)}
}
