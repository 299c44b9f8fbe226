package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/herd-iot/herd/bench/measure"
	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/sim"
)

// benchPipeJobs runs method jobs over fleets connected through the
// in-memory transport (sim.Pipe): the hub's gateway serves each device's
// net.Pipe in this process, so fleets can be larger than the sockets one
// process may hold.
func benchPipeJobs(ctx context.Context, cfg *config, r *report, logf func(string, ...any)) error {
	for _, n := range cfg.pipeDevices {
		if err := pipeJob(ctx, cfg, r, logf, n); err != nil {
			return err
		}
	}
	return nil
}

func pipeJob(ctx context.Context, cfg *config, r *report, logf func(string, ...any), n int) error {
	h, err := inprocHub(ctx, "pipe", "", false)
	if err != nil {
		return err
	}
	defer h.stop()
	logf("registering %d devices", n)
	ids, err := register(ctx, h, "pipe-", n)
	if err != nil {
		return err
	}
	base := measure.SettledRSS()
	f := sim.New(sim.Config{Host: h.Hostname(), Dial: sim.Pipe(h.Gateway.ServeConn), Devices: ids, Concurrency: 1024})
	logf("connecting %d devices through the in-memory transport", n)
	start := time.Now()
	if err := f.Connect(ctx); err != nil {
		return err
	}
	defer f.Disconnect()
	connect := time.Since(start)
	if err := waitConnected(ctx, h, int64(n), time.Minute); err != nil {
		return err
	}
	mem := measure.SettledRSS()
	logf("method job over %d in-memory devices, %d runs", n, cfg.jobRuns)
	took, err := jobRuns(ctx, h, cfg.jobRuns, n, "pipe-method",
		`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"}}}`)
	if err != nil {
		return err
	}
	r.add(row{what: "method job, devices through the in-memory transport (hub and devices in one process), every outcome persisted",
		scale: fmt.Sprintf("%s devices", count(n)), measured: rate(n, took), target: "", n: n})
	r.note("In-memory fleet of %s devices: connected in %s (%s/s, SAS-authenticated, both ends in one process); the process grew by %.1f KB per device, hub and simulated device together.",
		count(n), seconds(connect), count(int(float64(n)/connect.Seconds())), float64(mem-base)/float64(n))
	return nil
}

// benchTwinJobs runs a twin-update job (a tag and a desired property) over
// every device of a registered fleet (fleetdb.Jobs, no device connected)
// through a whole hub.
func benchTwinJobs(ctx context.Context, cfg *config, r *report, logf func(string, ...any)) error {
	for _, n := range cfg.twinDevices {
		start := time.Now()
		src, built, err := fleetdb.Path(ctx, cfg.dir, fleetdb.Jobs, n)
		if err != nil {
			return err
		}
		if built {
			logf("built a fleet of %d devices in %s (kept in %s)", n, time.Since(start).Round(time.Second), cfg.dir)
		}
		// Each run on a fresh copy of the fleet, so that every run
		// patches the same twins; the median is reported.
		var took []time.Duration
		for range cfg.jobRuns {
			d, err := twinJob(ctx, cfg, src, n)
			if err != nil {
				return err
			}
			took = append(took, d)
		}
		slices.Sort(took)
		med := took[len(took)/2]
		measured := fmt.Sprintf("**%s** (%s devices/s)", seconds(med), count(int(float64(n)/med.Seconds()))) + runsNote(took)
		target := ""
		if n == 1_000_000 {
			target = "≤ 10 s"
		}
		r.add(row{what: "twin-update job (a tag and a desired property on every twin), start → `completed`", scale: fmt.Sprintf("%s registered devices", count(n)),
			measured: measured, target: target, n: n})
	}
	return nil
}

func twinJob(ctx context.Context, cfg *config, src string, n int) (time.Duration, error) {
	h, err := inprocHub(ctx, "twin", src, false)
	if err != nil {
		return 0, err
	}
	defer h.stop()
	took, err := jobRuns(ctx, h, 1, n, "rollout",
		`{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"ring":"canary"},"properties":{"desired":{"fw":"2.0"}}}}`)
	if err != nil {
		return 0, err
	}
	return took[0], nil
}

// benchStart schedules jobs due 50 ms apart, starting a second ahead, and
// reports how late after its startTime each started.
func benchStart(ctx context.Context, cfg *config, r *report, logf func(string, ...any)) error {
	h, err := inprocHub(ctx, "start", "", false)
	if err != nil {
		return err
	}
	defer h.stop()
	if _, err := register(ctx, h, "start-", 100); err != nil {
		return err
	}
	k := cfg.startJobs
	base := time.Now().Add(time.Second)
	for i := range k {
		at := base.Add(time.Duration(i) * 50 * time.Millisecond).UTC().Format(time.RFC3339Nano)
		body := fmt.Sprintf(`{"type":"scheduleUpdateTwin","queryCondition":"*","startTime":%q,"updateTwin":{"etag":"*","tags":{"k":%d}}}`, at, i)
		if _, err := h.Jobs.Create(ctx, fmt.Sprintf("s%03d", i), []byte(body), nil); err != nil {
			return err
		}
	}
	var delays []time.Duration
	for i := range k {
		id := fmt.Sprintf("s%03d", i)
		for {
			j, err := h.Jobs.Get(ctx, id)
			if err != nil {
				return err
			}
			if j.EndTime != nil && !j.EndTime.IsZero() {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		rec, err := h.Store.Job(ctx, id)
		if err != nil {
			return err
		}
		delays = append(delays, rec.Started.Sub(rec.StartTime.Time))
	}
	slices.Sort(delays)
	q := func(p float64) time.Duration { return delays[min(len(delays)-1, int(p*float64(len(delays))))] }
	r.add(row{what: "job start after its `startTime` (twin jobs due 50 ms apart, 100 devices each)", scale: fmt.Sprintf("%d jobs", k),
		measured: fmt.Sprintf("**p50 %s, p99 %s, max %s**", seconds(q(0.5)), seconds(q(0.99)), seconds(delays[len(delays)-1])), target: "within 1 s"})
	return nil
}
