package job

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/herd-iot/herd"
)

// Batching of a method job's store writes.
const (
	pendingPage   = 1000 // pending devices read at a time
	maxClaimBatch = 1000 // devices claimed in one transaction
	maxWriteBatch = 2000 // outcomes written in one transaction
	// A batch of fewer outcomes than minWriteBatch waits up to
	// writeGather for more before it is written: calls finish one by one,
	// and a transaction costs far more than a row (at 2,000 calls in
	// flight, what had arrived was ~13 outcomes a transaction).
	minWriteBatch = 500
	writeGather   = 5 * time.Millisecond
)

// Messages of the direct-method failures (§5.3), as Azure words them.
const (
	msgNotOnline = "Timed out waiting for device to connect."
)

// methodRun is one method job being run.
type methodRun struct {
	s     *Service
	r     *Record
	req   herd.MethodRequest
	retry *herd.RetryPolicy // nil: no device is called twice
	feed  context.Context   // ends on cancel, deadline or shutdown
	call  context.Context   // ends on deadline, or a grace after shutdown: in-flight calls finish after a cancel

	claims   chan DueDevice // online devices holding a slot, to be claimed
	work     chan DueDevice // claimed devices, to an idle worker
	outcomes chan Outcome   // to be written
	calls    sync.WaitGroup // the workers
	waiters  sync.WaitGroup
	claimErr error // first store failure of the claimer (claimer only)
	limit    int64 // new devices to start at most (-1: every pending one)
	steer    *steer
	stop     func(cause error) // ends feed
}

// runMethod works through a method job's pending devices. A device that is
// online for methods is claimed (pending → running, durably, in batches)
// and only then invoked, so that after a crash a running record means "may
// have been sent" and is never sent again. A device that is offline fails
// at once with DeviceNotOnline if connectTimeoutInSeconds is 0; otherwise
// it stays pending while the engine waits (by notification, not polling)
// up to that long, bounded by the job's deadline, and is invoked the moment
// it comes online. Outcomes are written in batches. The global slot
// limiter bounds the calls in flight.
//
// Under a retry policy (herd.retry) a failed attempt may go back to
// pending, due again after its backoff: once a pass over the pending
// devices is done, the run waits for the earliest retry and passes again,
// until no device waits for one. limit counts devices started for the
// first time; retries of devices already started do not count.
func (s *Service) runMethod(ctx context.Context, run *runner, r *Record, st *steer, limit int64) error {
	feed, stop := run.feed, run.stop
	call, stopCalls := context.WithCancel(run.calls)
	defer stopCalls()
	go func() {
		<-feed.Done()
		if context.Cause(feed) == errDeadline {
			stopCalls()
		}
	}()
	m := &methodRun{s: s, r: r, req: *r.CloudToDeviceMethod, feed: feed, call: call, steer: st, stop: stop, limit: limit}
	if r.Herd != nil {
		m.retry = r.Herd.Retry
	}
	for {
		if err := m.pass(); err != nil || feed.Err() != nil || m.retry == nil {
			return err
		}
		rs, err := s.store.Retries(ctx, r.JobID)
		if err != nil || rs.Retrying == 0 {
			return err
		}
		if wait := rs.Next.Sub(s.clock.Now()); wait > 0 {
			s.log.Debug("job waits for retries", "job_id", r.JobID, "devices", rs.Retrying, "wait", wait)
			if !s.sleep(feed, wait) {
				return nil
			}
		}
	}
}

// pass feeds the devices due now through the claimer, the calls and the
// writer, and returns once every outcome is written.
func (m *methodRun) pass() error {
	m.claims, m.outcomes, m.claimErr = make(chan DueDevice, maxClaimBatch), make(chan Outcome, maxWriteBatch), nil
	m.work = make(chan DueDevice)
	writeErr := make(chan error, 1)
	go func() { writeErr <- m.write() }()
	claimDone := make(chan struct{})
	go func() {
		defer close(claimDone)
		m.claim()
	}()
	err := m.feedDevices()
	m.waiters.Wait()
	close(m.claims)
	<-claimDone
	close(m.work)
	m.calls.Wait()
	close(m.outcomes)
	werr := <-writeErr
	// A store failure ends the run with an error: the engine runs the job
	// again after a pause, from the devices still pending.
	return errors.Join(err, m.claimErr, werr)
}

// feedDevices reads the pending devices that are due and routes each:
// online ones to the claimer (after taking a slot), offline ones to a
// waiter or straight to failure.
func (m *methodRun) feedDevices() error {
	cursor := ""
	for m.feed.Err() == nil {
		// Once the wave's new devices are all started, only retries are
		// left to find.
		retriesOnly := m.limit == 0 && m.retry != nil
		due, err := m.s.store.DueDevices(m.feed, m.r.JobID, cursor, pendingPage, m.s.clock.Now(), retriesOnly)
		if err != nil {
			if m.feed.Err() != nil {
				return nil
			}
			return err
		}
		if len(due) == 0 {
			return nil
		}
		cursor = due[len(due)-1].ID
		for _, d := range due {
			if d.Attempts == 0 {
				if m.limit == 0 {
					if m.retry == nil {
						return nil // the wave's devices are all started
					}
					continue // left for the next wave; retries go on
				}
				m.limit--
			}
			if !m.steer.wait(m.feed, 1) {
				return nil
			}
			if m.s.cfg.Methods.Online(d.ID) {
				if !m.dispatch(d) {
					return nil
				}
				continue
			}
			if m.req.ConnectTimeoutInSeconds == 0 {
				m.fail(d, herd.ErrDeviceNotOnline, msgNotOnline, true)
				continue
			}
			select {
			case m.s.waiting <- struct{}{}:
			case <-m.feed.Done():
				return nil
			}
			m.waiters.Add(1)
			go m.wait(d)
		}
	}
	return nil
}

// dispatch takes a slot for an online device and hands it to the
// claimer; false if the job stopped feeding.
func (m *methodRun) dispatch(d DueDevice) bool {
	if _, err := m.s.slots.acquire(m.feed, m.r.JobID, 1); err != nil {
		return false
	}
	select {
	case m.claims <- d:
		return true
	case <-m.feed.Done():
		m.s.slots.release(1)
		return false
	}
}

// wait waits for an offline device to come online, up to the connect
// timeout and the job's deadline, then dispatches it; a device that does
// not come online fails with DeviceNotOnline.
func (m *methodRun) wait(d DueDevice) {
	defer m.waiters.Done()
	defer func() { <-m.s.waiting }()
	limit := time.Duration(m.req.ConnectTimeoutInSeconds) * time.Second
	ctx, cancel := context.WithCancel(m.feed)
	defer cancel()
	timedOut := make(chan struct{})
	t := m.s.clock.AfterFunc(limit, func() { close(timedOut); cancel() })
	defer t.Stop()
	err := m.s.cfg.Methods.WaitOnline(ctx, d.ID)
	select {
	case <-timedOut:
		m.fail(d, herd.ErrDeviceNotOnline, msgNotOnline, true)
		return
	default:
	}
	if err != nil {
		return // cancelled, deadline or shutdown: the store settles the record
	}
	m.dispatch(d)
}

// claim moves online devices from pending to running in batches and
// invokes each claimed device.
func (m *methodRun) claim() {
	batch := make([]string, 0, maxClaimBatch)
	attempts := make(map[string]int, maxClaimBatch)
	for d := range m.claims {
		batch = append(batch[:0], d.ID)
		clear(attempts)
		attempts[d.ID] = d.Attempts
	drain:
		for len(batch) < maxClaimBatch {
			select {
			case d, ok := <-m.claims:
				if !ok {
					break drain
				}
				batch = append(batch, d.ID)
				attempts[d.ID] = d.Attempts
			default:
				break drain
			}
		}
		if m.claimErr != nil || m.feed.Err() != nil {
			// They stay pending for the next run: after a store failure,
			// or once the job stopped feeding (no call starts after a
			// cancel, a pause or a shutdown).
			m.s.slots.release(len(batch))
			continue
		}
		claimed, err := m.s.store.ClaimDevices(m.call, m.r.JobID, batch, m.s.clock.Now())
		if errors.Is(err, ErrNotRunning) || errors.Is(err, ErrLeaseLost) {
			// Paused, cancelled or aborted before this claim, or another
			// node took the job over: the devices stay as the store has
			// them, and no more are fed.
			cause := errNotRunning
			if errors.Is(err, ErrLeaseLost) {
				cause = errLeaseLost
			}
			m.stop(cause)
			m.s.slots.release(len(batch))
			continue
		}
		if err != nil {
			if m.call.Err() == nil {
				m.claimErr = err
			}
			m.s.slots.release(len(batch))
			continue
		}
		// Devices cancelled meanwhile were not claimed: free their slots.
		m.s.slots.release(len(batch) - len(claimed))
		for _, id := range claimed {
			m.start(DueDevice{ID: id, Attempts: attempts[id]})
		}
	}
}

// start hands a claimed device to an idle worker, or to a new one when
// none is idle. Each call holds a slot, so the workers are bounded by the
// calls in flight (the slots the job holds) and those just finishing one;
// a worker keeps its grown stack for the next call, where a goroutine per
// call grew a new one each time.
func (m *methodRun) start(d DueDevice) {
	select {
	case m.work <- d:
	default:
		m.calls.Add(1)
		go m.worker(d)
	}
}

// worker invokes devices until the pass has none left to start.
func (m *methodRun) worker(d DueDevice) {
	defer m.calls.Done()
	for ok := true; ok; d, ok = <-m.work {
		m.invoke(d)
	}
}

// invoke calls the method on one claimed device and queues the outcome.
func (m *methodRun) invoke(d DueDevice) {
	defer m.s.slots.release(1)
	res, err := m.s.cfg.Methods.Invoke(m.call, d.ID, m.req)
	switch {
	case err == nil:
		o := Outcome{DeviceID: d.ID, Status: herd.DeviceJobCompleted, Response: res}
		if res.Status >= 400 {
			o.RetryAt = m.retryAt(d, herd.FailureFailed)
		}
		m.outcomes <- o
	case m.call.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		// Deadline or shutdown: ExpireJob or the next start's recovery
		// settles the record.
	default:
		code := herd.ErrorCodeOf(err)
		m.fail(d, code, herd.ErrorMessage(err), false)
	}
}

func (m *methodRun) fail(d DueDevice, code herd.ErrorCode, msg string, fromPending bool) {
	o := Outcome{DeviceID: d.ID, Status: herd.DeviceJobFailed, FromPending: fromPending,
		Error: &herd.DeviceJobError{Code: string(code), Description: msg}}
	if code != herd.ErrDeviceNotFound { // deleted since the snapshot: never found again
		o.RetryAt = m.retryAt(d, classify(o).failureType())
	}
	m.outcomes <- o
}

// retryAt returns when a device whose attempt just failed with failure
// type t is due again under the job's retry policy, or zero if it is not
// retried: the first criterion naming t decides, and a device that has
// made its maxAttempts attempts is done. The wait is backoffSeconds ×
// backoffFactor^(attempts−1), at most MaxRetryDelaySeconds, rounded up to
// a whole second (so that a batch's retries are written alike).
func (m *methodRun) retryAt(d DueDevice, t herd.FailureType) time.Time {
	return retryTime(m.retry, d.Attempts+1, t, m.s.clock.Now())
}

func retryTime(p *herd.RetryPolicy, attempts int, t herd.FailureType, now time.Time) time.Time {
	if p == nil || t == "" {
		return time.Time{}
	}
	for _, c := range p.Criteria {
		if c.FailureType != t && c.FailureType != herd.FailureAny {
			continue
		}
		if attempts >= c.MaxAttempts {
			return time.Time{}
		}
		secs := min(p.BackoffSeconds*math.Pow(p.BackoffFactor, float64(attempts-1)), herd.MaxRetryDelaySeconds)
		at := now.Add(time.Duration(secs * float64(time.Second)))
		if r := at.Truncate(time.Second); !r.Equal(at) {
			at = r.Add(time.Second)
		}
		return at
	}
	return time.Time{}
}

// record writes a batch of outcomes, trying again after a store failure
// (the outcomes are facts about calls that happened: they are not dropped)
// until it succeeds or the hub shuts down; in that case the devices stay
// running and the next start reports them interrupted.
func (m *methodRun) record(batch []Outcome) error {
	// Written even while the hub shuts down, if the store still works.
	ctx := context.WithoutCancel(m.call)
	for pause := 100 * time.Millisecond; ; pause = min(2*pause, 5*time.Second) {
		err := m.s.store.FinishDevices(ctx, m.r.JobID, batch, m.s.clock.Now())
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrLeaseLost) {
			// The node that took the job over records these devices
			// interrupted: their outcome is lost with the lease.
			m.stop(errLeaseLost)
			return err
		}
		m.s.log.Error("record outcomes", "job_id", m.r.JobID, "op", "write", "err", err)
		again := make(chan struct{})
		t := m.s.clock.AfterFunc(pause, func() { close(again) })
		select {
		case <-again:
		case <-m.call.Done():
			t.Stop()
			return err
		}
	}
}

// write records outcomes in batches: it takes what has arrived (at least
// one), and while that is fewer than minWriteBatch, what arrives within
// writeGather more (wall-clock time, also on a fake Clock: it shapes
// batches, not the job), and writes it in one transaction, so batches
// grow with the load.
func (m *methodRun) write() error {
	var firstErr error
	batch := make([]Outcome, 0, maxWriteBatch)
	gather := time.NewTimer(writeGather)
	gather.Stop()
	for o := range m.outcomes {
		batch = append(batch[:0], o)
		gathering := false
	drain:
		for len(batch) < maxWriteBatch {
			select {
			case o, ok := <-m.outcomes:
				if !ok {
					break drain
				}
				batch = append(batch, o)
				continue
			default:
			}
			if len(batch) >= minWriteBatch {
				break
			}
			if !gathering {
				gathering = true
				gather.Reset(writeGather)
			}
			select {
			case o, ok := <-m.outcomes:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			case <-gather.C:
				gathering = false
				break drain
			}
		}
		// Since Go 1.23 a stopped timer delivers nothing stale: it
		// needs no draining before the next Reset.
		gather.Stop()
		if err := m.steer.outcomes(m.call, batch); err != nil && firstErr == nil {
			firstErr = err
		}
		if err := m.record(batch); err != nil {
			firstErr = err
			continue
		}
		ok, retried := 0, 0
		for _, o := range batch {
			switch {
			case !o.RetryAt.IsZero():
				retried++
			case o.Status == herd.DeviceJobCompleted:
				ok++
			}
		}
		m.s.metrics.devices.WithLabelValues(string(m.r.Type), "succeeded").Add(float64(ok))
		m.s.metrics.devices.WithLabelValues(string(m.r.Type), "failed").Add(float64(len(batch) - ok - retried))
		if retried > 0 {
			m.s.metrics.devices.WithLabelValues(string(m.r.Type), "retried").Add(float64(retried))
		}
	}
	return firstErr
}
