// Package job owns v2 jobs (§6 of the compatibility reference): scheduled
// direct-method calls and twin updates broadcast to every device a query
// condition selects. It validates and stores job requests, and its engine
// starts each job on time, snapshots the target devices in one set-based
// statement, fans the work out in batches under a global cap on in-flight
// device operations shared fairly between jobs, keeps per-device records
// and the job's statistics in the same transactions, enforces the job's
// deadline and cancel, resumes jobs after a restart without applying a twin
// patch or invoking a method twice, and purges old job history.
//
// docs/jobs.md is the contract this package implements.
package job

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/twin"
)

// Record is a job as the store keeps it.
type Record struct {
	herd.Job
	// Started is when the engine started the job (zero before); the
	// deadline counts from it.
	Started time.Time
	// Wave is the wave of the job's rollout its devices are started from
	// (0-based; 0 for a job without waves).
	Wave int
	// Request is the job's work as stored: the updateTwin member as
	// received (compact JSON), or the cloudToDeviceMethod member with its
	// defaults filled in.
	Request json.RawMessage
	// Lease is who runs the job in a cluster (Leases); zero in a store
	// without leases.
	Lease Lease
}

// Decode fills the echo member (CloudToDeviceMethod or UpdateTwin) from
// Request, as a store does after reading a job.
func (r *Record) Decode() error {
	r.HerdStatus = herdStatus(r)
	switch r.Type {
	case herd.JobDeviceMethod:
		var m herd.MethodRequest
		if err := json.Unmarshal(r.Request, &m); err != nil {
			return err
		}
		r.CloudToDeviceMethod = &m
	case herd.JobUpdateTwin:
		p, err := twin.ParseService(r.Request)
		if err != nil {
			// Stored by a Herd with looser rules: echo it as stored (the
			// engine fails such a job when it runs).
			var echo herd.TwinPatch
			if json.Unmarshal(r.Request, &echo) != nil {
				return err
			}
			r.UpdateTwin = &echo
			return nil
		}
		r.UpdateTwin = EchoPatch(p)
	}
	return nil
}

// Deadline is when the job's maxExecutionTimeInSeconds runs out.
func (r *Record) Deadline() time.Time {
	return r.Started.Add(time.Duration(r.MaxExecutionTimeInSeconds) * time.Second)
}

// Outcome is what happened to one device of a job.
type Outcome struct {
	DeviceID string
	// Status is DeviceJobCompleted, DeviceJobFailed or DeviceJobCanceled.
	Status herd.DeviceJobStatus
	// Response is a method job's device answer (completed devices).
	Response *herd.MethodResult
	// Error says why the device failed.
	Error *herd.DeviceJobError
	// FromPending marks a device that fails without ever having been
	// claimed (an offline device); others move from running.
	FromPending bool
	// RetryAt, when set, makes a failure an attempt to be made again
	// (herd.retry): the device goes back to pending, keeping the error,
	// and is not due before RetryAt. The store records it as a failure
	// (the device's last) if the job is neither running nor paused.
	RetryAt time.Time
}

// HasRetry says whether a batch of outcomes holds retries.
func HasRetry(outcomes []Outcome) bool {
	for _, o := range outcomes {
		if !o.RetryAt.IsZero() {
			return true
		}
	}
	return false
}

// DueDevice is a pending device of a method job that may start now, and
// how many attempts it has made.
type DueDevice struct {
	ID       string
	Attempts int
}

// RetryState is how many of a job's pending devices have made attempts
// (they wait for a retry, herd.retry) and when the earliest is due (zero
// if none is).
type RetryState struct {
	Retrying int64
	Next     time.Time
}

// ErrNotRunning is the store's answer to a claim or a twin batch of a job
// that is not running (paused, cancelled or aborting meanwhile): nothing
// was changed, and the runner stops.
var ErrNotRunning = errors.New("the job is not running")

// FailureCounts are a job's device outcomes by failure type, as abort
// criteria count them (herd.FailureType): Executed devices have an outcome
// (completed or failed; canceled ones do not count); Failed are failures
// other than the two below, and methods that answered with a status of 400
// or more; TimedOut are GatewayTimeout failures; NotOnline DeviceNotOnline
// ones.
type FailureCounts struct {
	Executed, Failed, TimedOut, NotOnline int64
}

// Of returns the count of one failure type.
func (c FailureCounts) Of(t herd.FailureType) int64 {
	switch t {
	case herd.FailureFailed:
		return c.Failed
	case herd.FailureTimedOut:
		return c.TimedOut
	case herd.FailureNotOnline:
		return c.NotOnline
	}
	return c.Failed + c.TimedOut + c.NotOnline
}

// TwinBatchResult is what one twin-update batch did.
type TwinBatchResult struct {
	// Next is the cursor for the next batch (the last device id seen);
	// Done says no pending device is left after it.
	Next string
	Done bool
	// Updated are the devices whose twin changed, with their new desired
	// $version (0 when the patch did not touch desired properties).
	Updated []Updated
	// Failed counts devices that failed (deleted since the snapshot, or a
	// section over its size limit).
	Failed int
}

// Updated is one twin a batch wrote.
type Updated struct {
	DeviceID       string
	DesiredVersion int64
	// Cleared lists the desired properties that a patch clearing the
	// whole desired section removed (they are sent to the device as null).
	Cleared []string
	// Where is where the batch saw the device connected, if the store
	// read it with the write (a cluster sends the notification only to
	// that node).
	Where twin.Where
}

// EndedSelection selects the device records of a job that one store write ended
// (completed, failed or canceled at At): those among IDs, or, without IDs,
// those after After up to Last (Last "": to the end), in device order.
type EndedSelection struct {
	At          time.Time
	IDs         []string
	After, Last string
}

// ListFilter selects jobs for GET /jobs/v2/query.
type ListFilter struct {
	// Type and Status are exact (canonical) values, "" for any.
	Type   herd.JobType
	Status herd.JobStatus
	// After is the continuation from the previous page ("" for the first).
	After string
	Limit int
	// Newest lists the newest jobs first (the continuation then leads to
	// older ones).
	Newest bool
}

// Store keeps jobs and their device records. Every method that changes
// device records changes the job's statistics in the same transaction, so
// that deviceCount = succeeded + failed + running + pending at every
// commit (canceled devices count as failed, see docs/jobs.md).
type Store interface {
	// CreateJob stores a new queued job; JobAlreadyExists if the id is
	// taken, ArgumentInvalid if its queryCondition cannot be compiled in
	// the store's SQL.
	CreateJob(ctx context.Context, r *Record) error
	// Job returns one job; JobNotFound if there is none.
	Job(ctx context.Context, id string) (*Record, error)
	// ListJobs returns a page of jobs in creation order (newest first
	// with f.Newest) and the continuation for the next page ("" on the
	// last).
	ListJobs(ctx context.Context, f ListFilter) ([]*Record, string, error)
	// ActiveJobs returns the jobs the engine must look after: queued,
	// scheduled and running ones, and cancelled ones still finishing.
	ActiveJobs(ctx context.Context) ([]*Record, error)
	// ScheduleJob moves a queued job to scheduled.
	ScheduleJob(ctx context.Context, id string, now time.Time) error
	// StartJob moves a queued or scheduled job to running and inserts a
	// pending device record for every device matching the parsed
	// queryCondition (compiled by the store in its own SQL dialect), in
	// one transaction. A job with no devices completes at once, unless it
	// is continuous (herd.continuous): a continuous job that is running or
	// paused never completes for want of devices, only at its deadline. It
	// returns the job as it is after (possibly unchanged, if it was
	// cancelled); a condition the store cannot run is ArgumentInvalid.
	StartJob(ctx context.Context, id string, cond *query.Query, now time.Time) (*Record, error)
	// FailJob ends a job that could not run (failed, with reason).
	FailJob(ctx context.Context, id, reason string, now time.Time) error
	// CancelJob cancels a job that has not ended: pending devices become
	// canceled; running ones go on. It returns the job after.
	CancelJob(ctx context.Context, id string, now time.Time) (*Record, error)
	// ApplyTwinBatch applies a twin job's patch to up to limit pending
	// devices after the cursor and completes their records, in one
	// transaction; ErrNotRunning if the job is not running (paused,
	// cancelled or aborting).
	ApplyTwinBatch(ctx context.Context, id string, p twin.Patch, after string, limit int, now time.Time) (TwinBatchResult, error)
	// PendingDevices returns up to limit pending device ids after the
	// cursor, in order.
	PendingDevices(ctx context.Context, id, after string, limit int) ([]string, error)
	// DueDevices returns up to limit pending device ids after the cursor,
	// in order, leaving out devices whose retry is due after now; with
	// retries, only devices that have made attempts (waiting for a
	// retry).
	DueDevices(ctx context.Context, id, after string, limit int, now time.Time, retries bool) ([]DueDevice, error)
	// Retries returns the job's devices waiting for a retry.
	Retries(ctx context.Context, id string) (RetryState, error)
	// ClaimDevices moves the given devices from pending to running (one
	// more attempt each) and
	// returns those it moved (a device cancelled meanwhile is not);
	// ErrNotRunning if the job is not running, checked in the same
	// transaction, so that no device starts after a pause commits.
	ClaimDevices(ctx context.Context, id string, deviceIDs []string, now time.Time) ([]string, error)
	// FinishDevices records outcomes. An outcome for a device that is no
	// longer in the expected state (pending or running) is ignored; one
	// from pending counts an attempt.
	FinishDevices(ctx context.Context, id string, outcomes []Outcome, now time.Time) error
	// PauseJob pauses a queued, scheduled or running job (the engine
	// starts no device of a paused job) and returns it after; a job in
	// another state is returned unchanged.
	PauseJob(ctx context.Context, id string, now time.Time) (*Record, error)
	// ResumeJob moves a paused job back to running (or queued, if it had
	// not started; a started job with nothing left to do completes) and
	// returns it after; a job in another state is returned unchanged.
	ResumeJob(ctx context.Context, id string, now time.Time) (*Record, error)
	// AbortJob fails a running or paused job with reason, as a cancel
	// does: pending devices become canceled, running ones finish, and the
	// job ends (status failed) when they have. It returns the job after;
	// a job in another state is returned unchanged.
	AbortJob(ctx context.Context, id, reason string, now time.Time) (*Record, error)
	// AdvanceWave moves a running or paused job whose wave is below wave
	// to wave, and with pause pauses it if running, in one statement; the
	// job as it is after.
	AdvanceWave(ctx context.Context, id string, wave int, pause bool, now time.Time) (*Record, error)
	// FailureCounts counts the devices of a job that have an outcome
	// (completed or failed) and its failures by type.
	FailureCounts(ctx context.Context, id string) (FailureCounts, error)
	// ExpireJob ends a job at its deadline: every device not done fails
	// with devErr, and the job ends with status end: failed with reason,
	// or completed (a continuous job's natural end; reason is unused).
	ExpireJob(ctx context.Context, id string, end herd.JobStatus, reason string, devErr herd.DeviceJobError, now time.Time) error
	// AddDevices targets more devices of a continuous job that is running
	// or paused: a pending record for each device matching cond — among
	// deviceIDs, or every device when deviceIDs is nil — that the job has
	// no record of yet, counted in its statistics, in one transaction. It
	// returns how many it added (none for a job in another state).
	AddDevices(ctx context.Context, id string, cond *query.Query, deviceIDs []string, now time.Time) (int64, error)
	// InterruptRunning fails every running device of a job with devErr
	// (methods in flight when the hub stopped) and returns how many.
	InterruptRunning(ctx context.Context, id string, devErr herd.DeviceJobError, now time.Time) (int, error)
	// EndedDevices returns up to limit records of the selection whose
	// device id is above cursor, in device order (the job event stream's
	// per-device events).
	EndedDevices(ctx context.Context, id string, sel EndedSelection, cursor string, limit int) ([]herd.DeviceJob, error)
	// PurgeJobs deletes jobs (and their device records) that ended
	// before the given time, and returns how many.
	PurgeJobs(ctx context.Context, endedBefore time.Time) (int, error)
}

// TwinBatching is implemented by stores whose twin jobs run best in
// other batches than the engine's defaults (DefaultTwinBatch, one batch
// at a time): a database server writes several transactions at once,
// unlike SQLite's one writer. Config.TwinBatch and TwinWorkers, when set,
// win.
type TwinBatching interface {
	// TwinBatching returns how many twins one batch patches and how many
	// batches of one job are in flight at a time (0: the default).
	TwinBatching() (size, writers int)
}

// Device-level error codes the engine writes (besides the direct-method
// codes DeviceNotOnline and GatewayTimeout, and DeviceNotFound).
const (
	// ErrCodeDeadline: the job's maxExecutionTimeInSeconds ran out
	// before the device finished.
	ErrCodeDeadline = "JobDeadlineExceeded"
	// ErrCodeInterrupted: the hub stopped while a method call was in
	// flight; it is not sent again (at most once).
	ErrCodeInterrupted = "MethodInterrupted"
	// ErrCodeTwinWrite: a twin job's write to this device failed twice
	// the same way (the store refused it).
	ErrCodeTwinWrite = "TwinUpdateFailed"
)

// Job-level limits and defaults (§6.1, §6.2).
const (
	MaxJobIDLength          = 64
	MaxQueryConditionLength = 8192
	DefaultMaxExecution     = 3600
	// MaxMaxExecution bounds maxExecutionTimeInSeconds (Azure documents
	// none; a year keeps the arithmetic safe).
	MaxMaxExecution = 365 * 24 * 3600
)
