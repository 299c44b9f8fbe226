package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
)

// jobPreviewRoutes registers the job preview and the job event stream
// (docs/jobs.md, "Preview" and "Event stream"). Only POST is claimed on
// /jobs/v2/preview, so GET and PUT still address a job whose id is
// "preview".
func (s *Server) jobPreviewRoutes(read, write auth.Rights) {
	s.Handle("POST /jobs/v2/preview", map[string]Endpoint{http.MethodPost: {write, s.previewJob}})
	s.Handle("/jobs/v2/{jobId}/events", map[string]Endpoint{http.MethodGet: {read, s.jobEvents}})
}

// JobRights are the rights creating or cancelling a job of type t needs
// (the same rule as PUT /jobs/v2/{id}), for other front ends of the same
// services (the dashboard).
func JobRights(t herd.JobType) auth.Rights { return jobRights(t) }

// previewJob answers POST /jobs/v2/preview?sample=N: what a job with this
// body would target now, and how long it would take; nothing is written.
func (s *Server) previewJob(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r, maxBody)
	if err != nil {
		return err
	}
	sample := 0
	if v := r.URL.Query().Get("sample"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return herd.Errorf(herd.ErrArgumentInvalid, "sample=%q is not a positive number", v)
		}
		sample = n
	}
	p, err := s.cfg.Jobs.Preview(r.Context(), body, sample, allowJobs(r, "creating"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// jobEvents serves GET /jobs/v2/{id}/events: Server-Sent Events of the
// job's progress. The first event is the job as it is ("progress"); then
// one each time the engine reports a change (coalesced, at most one per
// job.ProgressEvery), with the job as GET /jobs/v2/{id} returns it; and
// "end" with the final job, after which the stream closes. Before a
// progress or end event, "status" says that the job's status changed
// ({"status", "failureReason"}: paused, resumed, aborted…) and "wave"
// that a rollout moved to its next wave ({"wave", "waves"}). With
// devices=true, "device" events carry each device record that ends
// (completed, failed, canceled) while the stream is open, as devices.jobs
// returns it, before the progress event that counts it; "lagged" says
// some were dropped (the client read too slowly). Nothing polls the
// store: a change notification is what makes the stream read the job
// (job.Service.Follow).
func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return herd.Errorf(herd.ErrInternal, "streaming is not supported by this connection")
	}
	withDevices := false
	if v := r.URL.Query().Get("devices"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return herd.Errorf(herd.ErrArgumentInvalid, "devices=%q is not true or false", v)
		}
		withDevices = b
	}
	started := false
	var prev *herd.Job
	event := func(name string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
		return err
	}
	idle := func() error {
		_, err := fmt.Fprint(w, ": keep-alive\n\n")
		flusher.Flush()
		return err
	}
	progress := func(j *herd.Job, ended bool) error {
		if !started {
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Accel-Buffering", "no")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		if prev != nil && j.Status != prev.Status {
			if err := event("status", map[string]any{"status": j.Status, "failureReason": j.FailureReason}); err != nil {
				return err
			}
		}
		if hs := j.HerdStatus; hs != nil && prev != nil && (prev.HerdStatus == nil || prev.HerdStatus.Wave != hs.Wave) {
			if err := event("wave", hs); err != nil {
				return err
			}
		}
		prev = j
		name := "progress"
		if ended {
			name = "end"
		}
		err := event(name, j)
		flusher.Flush()
		return err
	}
	var err error
	if withDevices {
		err = s.cfg.Jobs.FollowDevices(r.Context(), r.PathValue("jobId"), heartbeatEvery, idle, progress,
			func(records []herd.DeviceJob, lagged bool) error {
				if lagged {
					return event("lagged", map[string]string{"message": "device events were dropped: the stream was read too slowly; query devices.jobs for every record"})
				}
				for i := range records {
					if err := event("device", &records[i]); err != nil {
						return err
					}
				}
				return nil
			})
	} else {
		err = s.cfg.Jobs.Follow(r.Context(), r.PathValue("jobId"), heartbeatEvery, idle, progress)
	}
	if err != nil && !started {
		return err // the job does not exist (or the store failed): an API error
	}
	if err != nil && herd.IsCode(err, herd.ErrJobNotFound) {
		fmt.Fprintf(w, "event: error\ndata: %q\n\n", herd.ErrorMessage(err)) // purged meanwhile
	}
	return nil
}
