package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

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

// jobEnded reports whether a job will not change any more: a terminal
// status and its end time set (a cancelled job's running devices finish
// first).
func jobEnded(j *herd.Job) bool { return j.Status.Terminal() && j.EndTime != nil }

// jobEvents serves GET /jobs/v2/{id}/events: Server-Sent Events of the
// job's progress. The first event is the job as it is ("progress"); then
// one each time the engine reports a change (coalesced, at most
// 1/job.ProgressEvery), with the job as GET /jobs/v2/{id} returns it; and
// "end" with the final job, after which the stream closes. Nothing polls
// the store: a change notification is what makes the stream read the job.
func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return herd.Errorf(herd.ErrInternal, "streaming is not supported by this connection")
	}
	id := r.PathValue("jobId")
	watch := s.cfg.Jobs.Watch(id)
	defer watch.Close()
	j, err := s.cfg.Jobs.Get(r.Context(), id)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	beat := time.NewTicker(heartbeatEvery)
	defer beat.Stop()
	for {
		name := "progress"
		if jobEnded(j) {
			name = "end"
		}
		b, err := json.Marshal(j)
		if err != nil {
			return nil
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
			return nil
		}
		flusher.Flush()
		if name == "end" {
			return nil
		}
	wait:
		for {
			select {
			case <-r.Context().Done():
				return nil
			case <-watch.Done():
				return nil
			case <-beat.C:
				if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
					return nil
				}
				flusher.Flush()
			case <-watch.C():
				break wait
			}
		}
		if j, err = s.cfg.Jobs.Get(r.Context(), id); err != nil {
			// Purged or the store failed: say so and end the stream.
			fmt.Fprintf(w, "event: error\ndata: %q\n\n", herd.ErrorMessage(err))
			return nil
		}
	}
}
