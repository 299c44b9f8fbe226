package hub

import (
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/job"
)

// newJobs builds the job service over the hub's store and twins.
func newJobs(h *Hub, cfg Config) *job.Service {
	return job.New(job.Config{
		Store:       h.DB,
		Compile:     compileCondition,
		Twins:       h.Twins,
		Clock:       clock.FromNow(cfg.Now),
		Log:         cfg.Log,
		MaxInFlight: cfg.JobMaxInFlight,
		TwinBatch:   cfg.JobTwinBatch,
		Retention:   cfg.JobRetention,
	})
}

// compileCondition compiles a job's queryCondition. Until the query
// language (internal/query) is wired in, only "*" (every device) is
// understood; any other condition makes the job fail with this reason.
func compileCondition(cond string) (job.Condition, error) {
	if strings.TrimSpace(cond) == "*" {
		return job.Condition{Where: "1"}, nil
	}
	return job.Condition{}, herd.Errorf(herd.ErrArgumentInvalid,
		"this hub cannot evaluate query conditions other than * yet (the query language is not built in)")
}
