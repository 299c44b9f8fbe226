package job

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/herd-iot/herd"
)

// Batching of a method job's store writes.
const (
	pendingPage   = 1000 // pending devices read at a time
	maxClaimBatch = 1000 // devices claimed in one transaction
	maxWriteBatch = 2000 // outcomes written in one transaction
)

// Messages of the direct-method failures (§5.3), as Azure words them.
const (
	msgNotOnline = "Timed out waiting for device to connect."
)

// methodRun is one method job being run.
type methodRun struct {
	s    *Service
	r    *Record
	req  herd.MethodRequest
	feed context.Context // ends on cancel, deadline or shutdown
	call context.Context // ends on deadline or shutdown: in-flight calls finish after a cancel

	claims   chan string  // online devices holding a slot, to be claimed
	outcomes chan Outcome // to be written
	calls    sync.WaitGroup
	waiters  sync.WaitGroup
	claimErr error // first store failure of the claimer (claimer only)
	limit    int64 // devices to start at most (-1: every pending one)
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
func (s *Service) runMethod(ctx, feed context.Context, stop func(error), r *Record, st *steer, limit int64) error {
	call, stopCalls := context.WithCancel(ctx)
	defer stopCalls()
	go func() {
		<-feed.Done()
		if context.Cause(feed) == errDeadline {
			stopCalls()
		}
	}()
	m := &methodRun{s: s, r: r, req: *r.CloudToDeviceMethod, feed: feed, call: call, steer: st, stop: stop, limit: limit,
		claims: make(chan string, maxClaimBatch), outcomes: make(chan Outcome, maxWriteBatch)}
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
	m.calls.Wait()
	close(m.outcomes)
	werr := <-writeErr
	// A store failure ends the run with an error: the engine runs the job
	// again after a pause, from the devices still pending.
	return errors.Join(err, m.claimErr, werr)
}

// feedDevices reads the pending devices and routes each: online ones to
// the claimer (after taking a slot), offline ones to a waiter or straight
// to failure.
func (m *methodRun) feedDevices() error {
	cursor := ""
	for m.feed.Err() == nil {
		ids, err := m.s.store.PendingDevices(m.feed, m.r.JobID, cursor, pendingPage)
		if err != nil {
			if m.feed.Err() != nil {
				return nil
			}
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		cursor = ids[len(ids)-1]
		for _, id := range ids {
			if m.limit == 0 {
				return nil // the wave's devices are all started
			}
			m.limit--
			if !m.steer.wait(m.feed, 1) {
				return nil
			}
			if m.s.cfg.Methods.Online(id) {
				if !m.dispatch(id) {
					return nil
				}
				continue
			}
			if m.req.ConnectTimeoutInSeconds == 0 {
				m.fail(id, herd.ErrDeviceNotOnline, msgNotOnline, true)
				continue
			}
			select {
			case m.s.waiting <- struct{}{}:
			case <-m.feed.Done():
				return nil
			}
			m.waiters.Add(1)
			go m.wait(id)
		}
	}
	return nil
}

// dispatch takes a slot for an online device and hands it to the
// claimer; false if the job stopped feeding.
func (m *methodRun) dispatch(id string) bool {
	if _, err := m.s.slots.acquire(m.feed, m.r.JobID, 1); err != nil {
		return false
	}
	select {
	case m.claims <- id:
		return true
	case <-m.feed.Done():
		m.s.slots.release(1)
		return false
	}
}

// wait waits for an offline device to come online, up to the connect
// timeout and the job's deadline, then dispatches it; a device that does
// not come online fails with DeviceNotOnline.
func (m *methodRun) wait(id string) {
	defer m.waiters.Done()
	defer func() { <-m.s.waiting }()
	limit := time.Duration(m.req.ConnectTimeoutInSeconds) * time.Second
	ctx, cancel := context.WithCancel(m.feed)
	defer cancel()
	timedOut := make(chan struct{})
	t := m.s.clock.AfterFunc(limit, func() { close(timedOut); cancel() })
	defer t.Stop()
	err := m.s.cfg.Methods.WaitOnline(ctx, id)
	select {
	case <-timedOut:
		m.fail(id, herd.ErrDeviceNotOnline, msgNotOnline, true)
		return
	default:
	}
	if err != nil {
		return // cancelled, deadline or shutdown: the store settles the record
	}
	m.dispatch(id)
}

// claim moves online devices from pending to running in batches and
// invokes each claimed device.
func (m *methodRun) claim() {
	batch := make([]string, 0, maxClaimBatch)
	for id := range m.claims {
		batch = append(batch[:0], id)
	drain:
		for len(batch) < maxClaimBatch {
			select {
			case id, ok := <-m.claims:
				if !ok {
					break drain
				}
				batch = append(batch, id)
			default:
				break drain
			}
		}
		if m.claimErr != nil {
			m.s.slots.release(len(batch)) // they stay pending for the next run
			continue
		}
		claimed, err := m.s.store.ClaimDevices(m.call, m.r.JobID, batch, m.s.clock.Now())
		if errors.Is(err, ErrNotRunning) {
			// Paused, cancelled or aborted before this claim: the devices
			// stay as the store has them, and no more are fed.
			m.stop(errNotRunning)
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
			m.calls.Add(1)
			go m.invoke(id)
		}
	}
}

// invoke calls the method on one claimed device and queues the outcome.
func (m *methodRun) invoke(id string) {
	defer m.calls.Done()
	defer m.s.slots.release(1)
	res, err := m.s.cfg.Methods.Invoke(m.call, id, m.req)
	switch {
	case err == nil:
		m.outcomes <- Outcome{DeviceID: id, Status: herd.DeviceJobCompleted, Response: res}
	case m.call.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		// Deadline or shutdown: ExpireJob or the next start's recovery
		// settles the record.
	default:
		code := herd.ErrorCodeOf(err)
		m.fail(id, code, herd.ErrorMessage(err), false)
	}
}

func (m *methodRun) fail(id string, code herd.ErrorCode, msg string, fromPending bool) {
	m.outcomes <- Outcome{DeviceID: id, Status: herd.DeviceJobFailed, FromPending: fromPending,
		Error: &herd.DeviceJobError{Code: string(code), Description: msg}}
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
// one) and writes it in one transaction, so batches grow with the load.
func (m *methodRun) write() error {
	var firstErr error
	batch := make([]Outcome, 0, maxWriteBatch)
	for o := range m.outcomes {
		batch = append(batch[:0], o)
	drain:
		for len(batch) < maxWriteBatch {
			select {
			case o, ok := <-m.outcomes:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		if err := m.steer.outcomes(m.call, batch); err != nil && firstErr == nil {
			firstErr = err
		}
		if err := m.record(batch); err != nil {
			firstErr = err
			continue
		}
		ok := 0
		for _, o := range batch {
			if o.Status == herd.DeviceJobCompleted {
				ok++
			}
		}
		m.s.metrics.devices.WithLabelValues(string(m.r.Type), "succeeded").Add(float64(ok))
		m.s.metrics.devices.WithLabelValues(string(m.r.Type), "failed").Add(float64(len(batch) - ok))
	}
	return firstErr
}
