package hub

import (
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
)

// newJobs builds the job service over the hub's store, twins and direct
// methods, on the hub's clock.
func newJobs(h *Hub, cfg Config, clk clock.Clock) *job.Service {
	return job.New(job.Config{
		Store:       h.DB,
		Compile:     compileCondition,
		Twins:       h.Twins,
		Methods:     jobMethods{h},
		Clock:       clk,
		Log:         cfg.Log,
		MaxInFlight: cfg.JobMaxInFlight,
		TwinBatch:   cfg.JobTwinBatch,
		Retention:   cfg.JobRetention,
		Metrics:     h.Metrics,
		Targets:     query.NewService(h.DB), // POST /jobs/v2/preview
	})
}

// The query service counts and samples a job's devices for its preview.
var _ job.Targets = (*query.Service)(nil)

// compileCondition compiles a job's queryCondition with the query
// language (internal/query): the WHERE part of a twin query, "*" for every
// device. A condition that does not parse fails the job with the parser's
// message, which gives the line and column.
func compileCondition(cond string) (job.Condition, error) {
	c, err := query.CompileJobCondition(query.SQLite, cond, "")
	if err != nil {
		return job.Condition{}, query.AsHerdError(err)
	}
	return job.Condition{Where: c.Text, Args: c.Args}, nil
}
