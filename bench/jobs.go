package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/bench/measure"
	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/sim"
)

// benchPipeJobs runs method jobs over fleets connected through the
// in-memory transport (sim.Pipe): the hub's gateway serves each device's
// net.Pipe in this process, so fleets can be larger than the sockets one
// process may hold.
func benchPipeJobs(ctx context.Context, e *bench) error {
	perDevice := map[*backend][]time.Duration{} // median job time per device, by fleet size
	for _, n := range e.cfg.pipeDevices {
		for _, b := range e.backends {
			d, err := pipeJob(ctx, e, b, n)
			if err != nil {
				return fmt.Errorf("%s: %w", b.Name(), err)
			}
			perDevice[b] = append(perDevice[b], d/time.Duration(n))
		}
	}
	sizes := e.cfg.pipeDevices
	if len(sizes) < 2 {
		return nil
	}
	for _, b := range e.backends {
		ds := perDevice[b]
		first, last := ds[0], ds[len(ds)-1]
		e.r.ratio(row{what: fmt.Sprintf("time per device of a method job, %s → %s devices (in-memory transport)", count(sizes[0]), count(sizes[len(sizes)-1])),
			store: b.Name(), scale: "",
			measured: fmt.Sprintf("%.2f× (%.1f µs → %.1f µs)", last.Seconds()/first.Seconds(), float64(first)/float64(time.Microsecond), float64(last)/float64(time.Microsecond)),
			target:   "flat (± 10 %)"})
	}
	return nil
}

// pipeJob measures method jobs over n in-memory devices and returns the
// plain job's median time.
func pipeJob(ctx context.Context, e *bench, b *backend, n int) (time.Duration, error) {
	cfg, r, logf := e.cfg, e.r, e.logf
	h, err := b.hub(ctx, "pipe", "", 0, false)
	if err != nil {
		return 0, err
	}
	defer h.stop()
	logf("registering %d devices", n)
	ids, err := register(ctx, h, "pipe-", n)
	if err != nil {
		return 0, err
	}
	base := measure.SettledRSS()
	f := sim.New(sim.Config{Host: h.Hostname(), Dial: sim.Pipe(h.Gateway.ServeConn), Devices: ids, Concurrency: 1024})
	logf("connecting %d devices through the in-memory transport", n)
	start := time.Now()
	if err := f.Connect(ctx); err != nil {
		return 0, err
	}
	defer f.Disconnect()
	connect := time.Since(start)
	if err := waitConnected(ctx, h, int64(n), time.Minute); err != nil {
		return 0, err
	}
	mem := measure.SettledRSS()
	// The pacer's own cost: beside each run of the job, the same job with
	// a rollout rate it never reaches (each device still takes a token),
	// the variants alternating so that all see the same store (its device
	// records grow with every run).
	logf("method job over %d in-memory devices, %d runs, alternating with the same job under a rollout and a retry policy that never bind (%s)", n, cfg.jobRuns, b.Name())
	const plainBody = `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"}}}`
	steeredBody := fmt.Sprintf(`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"}},"herd":{"rollout":{"maxPerMinute":%d}}}`, job.MaxRatePerMinute)
	// And the same job under a retry policy that never retries (every
	// device is online), for the cost of the retry bookkeeping.
	const retriedBody = `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"}},"herd":{"retry":{"criteria":[{"failureType":"DeviceNotOnline","maxAttempts":2}]}}}`
	var took, steered, retried []time.Duration
	variants := []struct {
		name string
		body string
		out  *[]time.Duration
	}{{"method", plainBody, &took}, {"steered", steeredBody, &steered}, {"retried", retriedBody, &retried}}
	for i := 1; i <= cfg.jobRuns; i++ {
		// Each run starts with the next variant, so that none always
		// follows the same one (the store's state after a job shapes the
		// next: its growing records, a checkpoint due).
		for k := range variants {
			v := variants[(i+k)%len(variants)]
			d, err := jobRuns(ctx, h, 1, n, fmt.Sprintf("pipe-%s-%d", v.name, i), v.body)
			if err != nil {
				return 0, err
			}
			*v.out = append(*v.out, d...)
		}
	}
	slices.Sort(took)
	slices.Sort(steered)
	slices.Sort(retried)
	r.add(row{what: "method job, devices through the in-memory transport (hub and devices in one process), every outcome persisted",
		store: b.Name(), scale: fmt.Sprintf("%s devices", count(n)), measured: rate(n, took), target: "", n: n})
	r.add(row{what: fmt.Sprintf("the same method job with `herd.rollout.maxPerMinute` %s (the pacer in the path, never binding), and its time over the unpaced job's", count(job.MaxRatePerMinute)),
		store: b.Name(), scale: fmt.Sprintf("%s devices", count(n)), target: "within noise of the unpaced job",
		measured: rate(n, steered) + fmt.Sprintf(", **%.2f×**", steered[len(steered)/2].Seconds()/took[len(took)/2].Seconds())})
	r.add(row{what: "the same method job with `herd.retry` (DeviceNotOnline, 2 attempts; every device online, so none is retried), and its time over the plain job's",
		store: b.Name(), scale: fmt.Sprintf("%s devices", count(n)), target: "within noise of the plain job",
		measured: rate(n, retried) + fmt.Sprintf(", **%.2f×**", retried[len(retried)/2].Seconds()/took[len(took)/2].Seconds())})
	// The same fleet, paced: does the rollout keep to its rate? A job at
	// paceRate starts a second's worth of devices at once, then the rest
	// at the rate, so (n - burst) devices take the measured time.
	logf("method job paced at %s devices a minute over %d devices (%s)", count(paceRate), n, b.Name())
	paced, err := jobRuns(ctx, h, 1, n, "pipe-paced", fmt.Sprintf(
		`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor"},"herd":{"rollout":{"maxPerMinute":%d}}}`, paceRate))
	if err != nil {
		return 0, err
	}
	// The pace governs when devices start: from the first device's start
	// to the last's, the devices after the first second's worth.
	recs, ok := h.Store.(interface {
		DeviceJobs(ctx context.Context, id string) ([]herd.DeviceJob, error)
	})
	if !ok {
		return 0, fmt.Errorf("the %s store does not list device records", b.Name())
	}
	djs, err := recs.DeviceJobs(ctx, "pipe-paced-1")
	if err != nil {
		return 0, err
	}
	var first, last time.Time
	for _, d := range djs {
		if t := d.StartTimeUTC.Time; first.IsZero() || t.Before(first) {
			first = t
		}
		if t := d.StartTimeUTC.Time; t.After(last) {
			last = t
		}
	}
	ran := last.Sub(first)
	burst := (paceRate + 59) / 60
	got := float64(n-burst) / ran.Minutes()
	r.add(row{what: fmt.Sprintf("the same method job paced at `herd.rollout.maxPerMinute` %s: devices started per minute after the first second's worth", count(paceRate)),
		store: b.Name(), scale: fmt.Sprintf("%s devices", count(n)), target: "within 2 % of the rate",
		measured: fmt.Sprintf("**%s/min** (%+.2f %%: the last device started %s after the first; the job ran %s in all)",
			count(int(got)), (got/float64(paceRate)-1)*100, seconds(ran), seconds(paced[0]))})
	r.note("In-memory fleet of %s devices (%s): connected in %s (%s/s, SAS-authenticated, both ends in one process); the process grew by %.1f KB per device, hub and simulated device together.",
		count(n), b.Name(), seconds(connect), count(int(float64(n)/connect.Seconds())), float64(mem-base)/float64(n))
	return took[len(took)/2], nil
}

// paceRate is the rate of the paced method job, devices a minute.
const paceRate = 100_000

// benchTwinJobs runs a twin-update job (a tag and a desired property) over
// every device of a registered fleet (fleetdb.Jobs, no device connected)
// through a whole hub, on each store; beside it, one raw SQL UPDATE doing
// the same merge on the same fleet, the floor of what the store can do.
func benchTwinJobs(ctx context.Context, e *bench) error {
	for _, n := range e.cfg.twinDevices {
		for _, b := range e.backends {
			if err := twinJobs(ctx, e, b, n); err != nil {
				return fmt.Errorf("%s: %w", b.Name(), err)
			}
		}
	}
	return nil
}

// twinJobBody is the benchmarks' twin-update job; twinJobPatch is its
// patch as the raw UPDATE applies it.
const (
	twinJobBody  = `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"ring":"canary"},"properties":{"desired":{"fw":"2.0"}}}}`
	twinJobPatch = `{"tags":{"ring":"canary"},"properties":{"desired":{"fw":"2.0"}}}`
)

func twinJobs(ctx context.Context, e *bench, b *backend, n int) error {
	// Each run on a fresh copy of the fleet, so that every run patches the
	// same twins; the median is reported.
	var took, raw []time.Duration
	for range e.cfg.jobRuns {
		d, err := twinJob(ctx, b, n)
		if err != nil {
			return err
		}
		took = append(took, d)
		if d, err = rawTwinUpdate(ctx, b, n); err != nil {
			return fmt.Errorf("raw UPDATE: %w", err)
		}
		raw = append(raw, d)
	}
	slices.Sort(took)
	slices.Sort(raw)
	med, rawMed := took[len(took)/2], raw[len(raw)/2]
	measured := fmt.Sprintf("**%s** (%s devices/s)", seconds(med), count(int(float64(n)/med.Seconds()))) + runsNote(took)
	target := ""
	if n == 1_000_000 {
		target = "≤ 10 s"
		if b.kind == storePostgres {
			target = "≤ 15 s"
		}
	}
	scale := fmt.Sprintf("%s registered devices", count(n))
	e.r.add(row{what: "twin-update job (a tag and a desired property on every twin), start → `completed`", store: b.Name(), scale: scale,
		measured: measured, target: target, n: n})
	rawTarget := ""
	if b.kind == storeSQLite {
		rawTarget = "job ≤ 2× raw"
	}
	e.r.add(row{what: "the same merge as one raw SQL UPDATE of every twin (tags, desired, versions, $metadata; no job records), and the job's time over it",
		store: b.Name(), scale: scale, target: rawTarget,
		measured: fmt.Sprintf("**%s**, job **%.2f×**", seconds(rawMed), med.Seconds()/rawMed.Seconds()) + runsNote(raw)})
	e.r.ratio(row{what: "twin job ÷ one raw UPDATE doing the same merge on the same database, same driver", store: b.Name(), scale: scale,
		measured: fmt.Sprintf("%.2f× (%s ÷ %s)", med.Seconds()/rawMed.Seconds(), seconds(med), seconds(rawMed)), target: "≤ 1.3×"})
	return nil
}

func twinJob(ctx context.Context, b *backend, n int) (time.Duration, error) {
	h, err := b.hub(ctx, "twin", fleetdb.Jobs, n, false)
	if err != nil {
		return 0, err
	}
	defer h.stop()
	took, err := jobRuns(ctx, h, 1, n, "rollout", twinJobBody)
	if err != nil {
		return 0, err
	}
	return took[0], nil
}

// benchStart schedules jobs due 50 ms apart, starting a second ahead, and
// reports how late after its startTime each started.
func benchStart(ctx context.Context, e *bench) error {
	for _, b := range e.backends {
		if err := startOn(ctx, e, b); err != nil {
			return fmt.Errorf("%s: %w", b.Name(), err)
		}
	}
	return nil
}

func startOn(ctx context.Context, e *bench, b *backend) error {
	cfg, r := e.cfg, e.r
	h, err := b.hub(ctx, "start", "", 0, false)
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
	r.add(row{what: "job start after its `startTime` (twin jobs due 50 ms apart, 100 devices each)", store: b.Name(), scale: fmt.Sprintf("%d jobs", k),
		measured: fmt.Sprintf("**p50 %s, p99 %s, max %s**", seconds(q(0.5)), seconds(q(0.99)), seconds(delays[len(delays)-1])), target: "within 1 s"})
	return nil
}
