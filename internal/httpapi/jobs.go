package httpapi

import (
	"net/http"
	"strconv"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/job"
)

// jobRoutes registers the jobs v2 API (§3.6, §6). The literal
// /jobs/v2/query is registered before /jobs/v2/{id} (ServeMux prefers the
// more specific pattern anyway; the order documents the rule).
func (s *Server) jobRoutes() {
	if s.cfg.Jobs == nil {
		return
	}
	rights := auth.ServiceConnect | auth.RegistryRead | auth.RegistryWrite
	s.Handle("/jobs/v2/query", map[string]Endpoint{http.MethodGet: {rights, s.listJobs}})
	s.Handle("/jobs/v2/{jobId}", map[string]Endpoint{
		http.MethodPut: {rights, s.putJob},
		http.MethodGet: {rights, s.getJob},
	})
	s.Handle("/jobs/v2/{jobId}/cancel", map[string]Endpoint{http.MethodPost: {rights, s.cancelJob}})
}

func (s *Server) putJob(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r, maxBody)
	if err != nil {
		return err
	}
	j, err := s.cfg.Jobs.Create(r.Context(), r.PathValue("jobId"), body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.cfg.Jobs.Get(r.Context(), r.PathValue("jobId"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

// cancelJob takes no body (the SDKs send Content-Length: 0 and no
// Content-Type).
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.cfg.Jobs.Cancel(r.Context(), r.PathValue("jobId"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

// listJobs serves GET /jobs/v2/query?jobType=&jobStatus= with the paging
// of §3.5: page size from x-ms-max-item-count (or pageSize=), capped at
// 100; x-ms-continuation (or continuationToken=) names the next page and is
// sent back only while more pages remain.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	lq := job.ListQuery{Type: q.Get("jobType"), Status: q.Get("jobStatus")}
	size := r.Header.Get("x-ms-max-item-count")
	if size == "" {
		size = q.Get("pageSize")
	}
	if size != "" {
		n, err := strconv.Atoi(size)
		if err != nil || n < 1 {
			return herd.Errorf(herd.ErrArgumentInvalid, "the page size %q is not a positive number", size)
		}
		lq.PageSize = n
	}
	lq.Continuation = r.Header.Get("x-ms-continuation")
	if lq.Continuation == "" {
		lq.Continuation = q.Get("continuationToken")
	}
	jobs, next, err := s.cfg.Jobs.List(r.Context(), lq)
	if err != nil {
		return err
	}
	w.Header().Set("x-ms-item-type", "JobResponse")
	if next != "" {
		w.Header().Set("x-ms-continuation", next)
	}
	writeJSON(w, http.StatusOK, jobs)
	return nil
}
