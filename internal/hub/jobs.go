package hub

import (
	"encoding/json"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
)

// newJobs builds the job service over the hub's store, twins and direct
// methods, on the hub's clock.
func newJobs(h *Hub, cfg Config, clk clock.Clock) *job.Service {
	var announce func()
	var relay func(job.ProgressEvent)
	if h.mesh != nil {
		announce = h.mesh.JobsChanged
		relay = func(ev job.ProgressEvent) {
			b, err := json.Marshal(ev)
			if err != nil {
				cfg.Log.Warn("cluster: a job progress note that does not encode", "job_id", ev.JobID, "err", err)
				return
			}
			h.mesh.JobProgress(b)
		}
	}
	return job.New(job.Config{
		Announce:    announce,
		Relay:       relay,
		Store:       h.Store,
		Twins:       h.Twins,
		Changed:     h.Configurations.Changed,
		Methods:     jobMethods{h},
		Grace:       cfg.grace(),
		Clock:       clk,
		Log:         cfg.Log,
		MaxInFlight: cfg.JobMaxInFlight,
		TwinBatch:   cfg.JobTwinBatch,
		Retention:   cfg.JobRetention,
		Metrics:     h.Metrics,
		Targets:     query.NewService(h.Store), // POST /jobs/v2/preview
	})
}

// The query service counts and samples a job's devices for its preview.
var _ job.Targets = (*query.Service)(nil)
