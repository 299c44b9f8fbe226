package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/herd-iot/herd"
)

// JobOptions are the scheduling options shared by both job kinds.
type JobOptions struct {
	// StartTime is when the job starts; zero means now.
	StartTime time.Time
	// MaxExecutionTime is the job's deadline, counted from its start;
	// zero means the hub's default (one hour). It is sent in whole
	// seconds.
	MaxExecutionTime time.Duration
	// Herd are Herd's own job options (the "herd" member: abort criteria;
	// nil for none). The hub validates them; see docs/jobs.md.
	Herd *herd.JobOptions
}

func jobPath(id string) string { return "/jobs/v2/" + url.PathEscape(id) }

// ScheduleDeviceMethod schedules a direct-method call on every device that
// queryCondition selects (the WHERE part of a twin query, or "*" for every
// device) and returns the job, queued.
func (c *Client) ScheduleDeviceMethod(ctx context.Context, jobID, queryCondition string, req herd.MethodRequest, opts JobOptions) (*herd.Job, error) {
	return c.scheduleJob(ctx, herd.Job{JobID: jobID, Type: herd.JobDeviceMethod, QueryCondition: queryCondition,
		CloudToDeviceMethod: &req}, opts)
}

// ScheduleTwinUpdate schedules a twin update (tags and/or desired
// properties; a nil value deletes a key) on every device that
// queryCondition selects, and returns the job, queued.
func (c *Client) ScheduleTwinUpdate(ctx context.Context, jobID, queryCondition string, patch herd.TwinPatch, opts JobOptions) (*herd.Job, error) {
	patch.ETag = "*" // a job updates every twin unconditionally (§6.2)
	return c.scheduleJob(ctx, herd.Job{JobID: jobID, Type: herd.JobUpdateTwin, QueryCondition: queryCondition,
		UpdateTwin: &patch}, opts)
}

// PreviewDeviceMethod reports what ScheduleDeviceMethod would do now,
// without scheduling anything (Herd's POST /jobs/v2/preview): the devices
// queryCondition selects, connected or not, a sample of up to sample ids
// (0: the hub's default, 10) and an estimate of the job's duration. The
// hub validates the job as it would schedule it; jobID may be empty.
func (c *Client) PreviewDeviceMethod(ctx context.Context, jobID, queryCondition string, req herd.MethodRequest, opts JobOptions, sample int) (*herd.JobPreview, error) {
	return c.previewJob(ctx, herd.Job{JobID: jobID, Type: herd.JobDeviceMethod, QueryCondition: queryCondition, CloudToDeviceMethod: &req}, opts, sample)
}

// PreviewTwinUpdate reports what ScheduleTwinUpdate would do now, as
// PreviewDeviceMethod does.
func (c *Client) PreviewTwinUpdate(ctx context.Context, jobID, queryCondition string, patch herd.TwinPatch, opts JobOptions, sample int) (*herd.JobPreview, error) {
	patch.ETag = "*"
	return c.previewJob(ctx, herd.Job{JobID: jobID, Type: herd.JobUpdateTwin, QueryCondition: queryCondition, UpdateTwin: &patch}, opts, sample)
}

func (c *Client) previewJob(ctx context.Context, j herd.Job, opts JobOptions, sample int) (*herd.JobPreview, error) {
	opts.apply(&j)
	var q url.Values
	if sample > 0 {
		q = url.Values{"sample": {strconv.Itoa(sample)}}
	}
	// jobId is optional here: no id at all, as "jobId": "" is not a valid one.
	body := struct {
		herd.Job
		JobID string `json:"jobId,omitempty"`
	}{j, j.JobID}
	var out herd.JobPreview
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/jobs/v2/preview", query: q, body: body, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// apply sets the options on a job body.
func (opts JobOptions) apply(j *herd.Job) {
	if !opts.StartTime.IsZero() {
		t := herd.NewTime(opts.StartTime)
		j.StartTime = &t
	}
	if opts.MaxExecutionTime > 0 {
		j.MaxExecutionTimeInSeconds = int64((opts.MaxExecutionTime + time.Second - 1) / time.Second)
	}
	j.Herd = opts.Herd
}

func (c *Client) scheduleJob(ctx context.Context, j herd.Job, opts JobOptions) (*herd.Job, error) {
	opts.apply(&j)
	var out herd.Job
	if _, err := c.do(ctx, request{method: http.MethodPut, path: jobPath(j.JobID), body: j, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetJob returns a job with its statistics.
func (c *Client) GetJob(ctx context.Context, jobID string) (*herd.Job, error) {
	var out herd.Job
	if _, err := c.do(ctx, request{method: http.MethodGet, path: jobPath(jobID), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// CancelJob cancels a job: one that has not started never runs; a running
// job's pending devices are canceled and its running ones finish.
func (c *Client) CancelJob(ctx context.Context, jobID string) (*herd.Job, error) {
	var out herd.Job
	if _, err := c.do(ctx, request{method: http.MethodPost, path: jobPath(jobID) + "/cancel", out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// PauseJob pauses a job (Herd's POST /jobs/v2/{id}/pause): it starts no
// more devices until ResumeJob; calls in flight finish and its deadline
// keeps running. A job in another state is returned unchanged.
func (c *Client) PauseJob(ctx context.Context, jobID string) (*herd.Job, error) {
	var out herd.Job
	if _, err := c.do(ctx, request{method: http.MethodPost, path: jobPath(jobID) + "/pause", out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// ResumeJob resumes a paused job (Herd's POST /jobs/v2/{id}/resume).
func (c *Client) ResumeJob(ctx context.Context, jobID string) (*herd.Job, error) {
	var out herd.Job
	if _, err := c.do(ctx, request{method: http.MethodPost, path: jobPath(jobID) + "/resume", out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// JobFilter narrows ListJobs; zero values match every job.
type JobFilter struct {
	Type   herd.JobType
	Status herd.JobStatus
	// PageSize is how many jobs each request fetches (at most 100).
	PageSize int
}

// ListJobs returns every job that matches the filter, following the
// hub's pages.
func (c *Client) ListJobs(ctx context.Context, f JobFilter) ([]*herd.Job, error) {
	q := url.Values{}
	if f.Type != "" {
		q.Set("jobType", string(f.Type))
	}
	if f.Status != "" {
		q.Set("jobStatus", string(f.Status))
	}
	var all []*herd.Job
	token := ""
	for {
		h := http.Header{}
		if f.PageSize > 0 {
			h.Set("x-ms-max-item-count", strconv.Itoa(f.PageSize))
		}
		if token != "" {
			h.Set("x-ms-continuation", token)
		}
		var page []*herd.Job
		reply, err := c.do(ctx, request{method: http.MethodGet, path: "/jobs/v2/query", query: q, header: h, out: &page})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		token = reply.Get("x-ms-continuation")
		if token == "" {
			return all, nil
		}
	}
}

// DefaultPollInterval is how often WaitJob polls a hub that has no job
// event stream.
const DefaultPollInterval = 500 * time.Millisecond

// JobHandler receives a job's event stream (FollowJob).
type JobHandler struct {
	// Progress, if not nil, is called with the job as it is when the
	// stream opens and again after each change (coalesced by the hub, at
	// most four times a second), the last time with the ended job.
	Progress func(*herd.Job) error
	// Device, if not nil, asks for per-device events: it is called with
	// each device record that ends (completed, failed, canceled) while
	// the stream is open, before the Progress call that counts it.
	Device func(*herd.DeviceJob) error
	// Lagged, if not nil, is told that the hub dropped device events
	// because this stream was read too slowly.
	Lagged func()
}

// FollowJob follows a job through the hub's event stream (GET
// /jobs/v2/{id}/events, Server-Sent Events: no polling) until it has
// ended, and returns it ended. It returns ctx's error if ctx ends first,
// a handler's error, or an error if the stream breaks (the hub stopped);
// a hub without the stream (Azure IoT Hub) answers 404 (not
// JobNotFound).
func (c *Client) FollowJob(ctx context.Context, jobID string, h JobHandler) (*herd.Job, error) {
	q := url.Values{}
	if h.Device != nil {
		q.Set("devices", "true")
	}
	var last *herd.Job
	err := c.stream(ctx, jobPath(jobID)+"/events", q, func(kind, data string) error {
		switch kind {
		case "progress", "end":
			var j herd.Job
			if err := json.Unmarshal([]byte(data), &j); err != nil {
				return fmt.Errorf("decode job event: %w", err)
			}
			last = &j
			if h.Progress != nil {
				if err := h.Progress(&j); err != nil {
					return err
				}
			}
			if kind == "end" {
				return errStreamDone
			}
		case "device":
			if h.Device == nil {
				return nil
			}
			var d herd.DeviceJob
			if err := json.Unmarshal([]byte(data), &d); err != nil {
				return fmt.Errorf("decode device event: %w", err)
			}
			return h.Device(&d)
		case "lagged":
			if h.Lagged != nil {
				h.Lagged()
			}
		case "error":
			var msg string
			json.Unmarshal([]byte(data), &msg)
			return herd.Errorf(herd.ErrJobNotFound, "%s", msg)
		}
		return nil
	})
	switch {
	case errors.Is(err, errStreamDone):
		return last, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	return nil, err
}

// WaitJob waits until a job has ended (completed, failed or cancelled,
// with its running devices finished) and returns it. onProgress, if not
// nil, is called with the job as it changes. It follows the hub's job
// event stream (FollowJob), and polls every DefaultPollInterval where
// there is none (Azure IoT Hub) or once the stream breaks. It returns
// ctx's error if ctx ends first.
func (c *Client) WaitJob(ctx context.Context, jobID string, onProgress func(*herd.Job)) (*herd.Job, error) {
	j, err := c.FollowJob(ctx, jobID, JobHandler{Progress: func(j *herd.Job) error {
		if onProgress != nil {
			onProgress(j)
		}
		return nil
	}})
	if err == nil || ctx.Err() != nil || herd.IsCode(err, herd.ErrJobNotFound) || herd.IsCode(err, herd.ErrUnauthorized) {
		return j, err
	}
	t := time.NewTicker(DefaultPollInterval)
	defer t.Stop()
	for {
		j, err := c.GetJob(ctx, jobID)
		if err != nil {
			return nil, err
		}
		if onProgress != nil {
			onProgress(j)
		}
		if Ended(j) {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Ended reports whether a job will not change any more: its status is
// terminal and its end time is set (a cancelled job's running devices have
// finished).
func Ended(j *herd.Job) bool {
	return j.Status.Terminal() && j.EndTime != nil && !j.EndTime.IsZero()
}
