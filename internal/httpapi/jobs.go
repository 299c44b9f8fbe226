package httpapi

import (
	"fmt"
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
	read := auth.ServiceConnect | auth.RegistryRead | auth.RegistryWrite
	// Creating or cancelling a job needs the rights of what the job does
	// (jobRights); the route admits the policies that may do either kind,
	// so a read-only token is refused before its body is read.
	write := auth.ServiceConnect | auth.RegistryWrite
	s.Handle("/jobs/v2/query", map[string]Endpoint{http.MethodGet: {read, s.listJobs}})
	s.Handle("/jobs/v2/{jobId}", map[string]Endpoint{
		http.MethodPut: {write, s.putJob},
		http.MethodGet: {read, s.getJob},
	})
	s.Handle("/jobs/v2/{jobId}/cancel", map[string]Endpoint{http.MethodPost: {write, s.cancelJob}})
	// Herd's: pause and resume need the rights of what the job does, as
	// cancel does.
	s.Handle("/jobs/v2/{jobId}/pause", map[string]Endpoint{http.MethodPost: {write, s.pauseJob}})
	s.Handle("/jobs/v2/{jobId}/resume", map[string]Endpoint{http.MethodPost: {write, s.resumeJob}})
	s.jobPreviewRoutes(read, write)
}

// jobRights are the rights of what a job does (§2.6): a twin job writes
// twins as PATCH /twins does (RegistryWrite or ServiceConnect), a method
// job calls methods as POST /twins/{id}/methods does (ServiceConnect).
func jobRights(t herd.JobType) auth.Rights {
	switch t {
	case herd.JobUpdateTwin:
		return auth.RegistryWrite | auth.ServiceConnect
	case herd.JobDeviceMethod:
		return auth.ServiceConnect
	}
	return 0
}

// allowJobs checks the caller's policy against what a job does.
func allowJobs(r *http.Request, op string) job.Allow {
	p := callerPolicy(r)
	return func(t herd.JobType) error {
		return p.Require(jobRights(t), fmt.Sprintf("%s a %s job", op, t))
	}
}

func (s *Server) putJob(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r, maxBody)
	if err != nil {
		return err
	}
	j, err := s.cfg.Jobs.Create(r.Context(), r.PathValue("jobId"), body, allowJobs(r, "creating"))
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
	j, err := s.cfg.Jobs.Cancel(r.Context(), r.PathValue("jobId"), allowJobs(r, "cancelling"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

// pauseJob and resumeJob take no body, as cancelJob.
func (s *Server) pauseJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.cfg.Jobs.Pause(r.Context(), r.PathValue("jobId"), allowJobs(r, "pausing"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

func (s *Server) resumeJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.cfg.Jobs.Resume(r.Context(), r.PathValue("jobId"), allowJobs(r, "resuming"))
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
