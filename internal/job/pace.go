package job

import (
	"context"
	"math"
	"sync"

	"golang.org/x/time/rate"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
)

// pacer paces a job's rollout (herd.rollout): a token bucket on the
// service's clock, from which each device the job starts takes a token.
// The bucket holds a second's worth of devices, so a job starts at most
// that many at once and then keeps to its rate. An exponential rollout
// raises the rate as devices succeed (perMinute); the rate never goes down.
type pacer struct {
	clock   clock.Clock
	rollout herd.Rollout

	mu     sync.Mutex
	lim    *rate.Limiter
	perMin float64
}

func newPacer(c clock.Clock, ro herd.Rollout, succeeded int64) *pacer {
	p := &pacer{clock: c, rollout: ro, perMin: perMinute(ro, succeeded)}
	p.lim = rate.NewLimiter(rate.Limit(p.perMin/60), burst(p.perMin))
	return p
}

// perMinute is a rollout's rate once succeeded devices have succeeded:
// MaxPerMinute, or the exponential rate — BaseRatePerMinute multiplied by
// IncrementFactor for each NumberOfSucceededDevices that succeeded —
// capped by MaxPerMinute if set.
func perMinute(ro herd.Rollout, succeeded int64) float64 {
	e := ro.Exponential
	if e == nil {
		return float64(ro.MaxPerMinute)
	}
	limit := float64(MaxRatePerMinute)
	if ro.MaxPerMinute > 0 {
		limit = float64(ro.MaxPerMinute)
	}
	steps := float64(succeeded / max(e.RateIncreaseCriteria.NumberOfSucceededDevices, 1))
	return min(float64(e.BaseRatePerMinute)*math.Pow(e.IncrementFactor, steps), limit)
}

// burst is the bucket's size at a rate: a second's worth of devices, at
// least one.
func burst(perMin float64) int {
	return max(1, int(math.Ceil(perMin/60)))
}

// batch returns how many devices to start at once, at most limit: no
// more than the bucket holds.
func (p *pacer) batch(limit int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return min(limit, p.lim.Burst())
}

// wait takes n tokens (at most a bucketful), sleeping on the service's
// clock until they are there; false if ctx ended first.
func (p *pacer) wait(ctx context.Context, s *Service, n int) bool {
	p.mu.Lock()
	now := p.clock.Now()
	r := p.lim.ReserveN(now, min(n, p.lim.Burst()))
	p.mu.Unlock()
	if d := r.DelayFrom(now); d > 0 {
		return s.sleep(ctx, d)
	}
	return ctx.Err() == nil
}

// succeeded raises an exponential rollout's rate when the devices that
// succeeded so far call for it.
func (p *pacer) succeeded(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := perMinute(p.rollout, n)
	if r <= p.perMin {
		return
	}
	now := p.clock.Now()
	p.lim.SetLimitAt(now, rate.Limit(r/60))
	p.lim.SetBurstAt(now, burst(r))
	p.perMin = r
}
