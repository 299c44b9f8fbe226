package hub

import (
	"encoding/json"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
)

// newJobs builds the job service over the hub's store, twins and direct
// methods, on the hub's clock.
//
// In a cluster every node runs the engine, and each job runs on the node
// that holds its lease (job.Leases, in the store), for as long as a node's
// own lease (Config.NodeLease).
func newJobs(h *Hub, cfg Config, clk clock.Clock, nodeID string) *job.Service {
	var announce func()
	var relay func(job.ProgressEvent)
	var leases job.Leases
	if h.mesh != nil {
		leases = h.Store.(ClusterStore).JobLeases(nodeID)
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
		Leases:      leases,
		NodeID:      nodeID,
		Lease:       cfg.NodeLease,
	})
}

// The query service counts and samples a job's devices for its preview.
var _ job.Targets = (*query.Service)(nil)
