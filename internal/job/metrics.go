package job

import "github.com/prometheus/client_golang/prometheus"

// metrics are the engine's Prometheus collectors.
type metrics struct {
	devices    *prometheus.CounterVec
	startDelay prometheus.Histogram
}

func newMetrics(s *Service, reg prometheus.Registerer) *metrics {
	m := &metrics{
		devices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_job_device_operations_total",
			Help: "Device operations finished by jobs, by job type and result (succeeded, failed; retried: a failed attempt to be made again).",
		}, []string{"type", "result"}),
		startDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_job_start_delay_seconds",
			Help:    "How late after its startTime each job started.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.devices, m.startDelay,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herd_jobs_running",
				Help: "Jobs the engine is running now.",
			}, func() float64 {
				s.mu.Lock()
				defer s.mu.Unlock()
				return float64(len(s.runners))
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herd_job_device_operations_in_flight",
				Help: "Device operations in flight across all jobs (capped by --job-max-in-flight).",
			}, func() float64 { return float64(s.slots.inUse()) }),
		)
	}
	return m
}
