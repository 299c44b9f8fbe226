package job

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/herd-iot/herd/internal/query"
)

// Continuous jobs (herd.continuous) run until their deadline: a device
// that starts matching the job's condition after the snapshot is added to
// the job (once: a device the job has a record of is never added again)
// and started like the others. The follower finds those devices. It is
// told about every device whose registry entry or twin changed
// (Service.DeviceChanged, after the change commits) and asks the store,
// in batches, which of them match each continuous job being run, in the
// store's own SQL (AddDevices), so that the condition means exactly what
// it meant for the snapshot. A rescan of the whole fleet for each job, when
// its runner starts and every Config.ContinuousRescan, catches what no
// change notice tells (a device that matches by its connection state, a
// change the hub lost in a crash).
//
// A runner is followed before its job starts: a device written during the
// snapshot is either in it, or its notice comes after the snapshot
// commits (the store orders AddDevices after StartJob), so none is
// missed.

// DefaultContinuousRescan is how often a continuous job looks for matching
// devices over the whole fleet (Azure re-evaluates automatic
// configurations every 5 minutes).
const DefaultContinuousRescan = 5 * time.Minute

// Bounds of the follower's batches.
const (
	// followBatch is how many changed devices one AddDevices checks.
	followBatch = 1000
	// maxFollowed bounds the changed devices waiting to be checked; past
	// it the follower forgets them and rescans the fleet instead.
	maxFollowed = 100_000
)

// follower tracks the continuous jobs being run and the devices that
// changed since it last looked.
type follower struct {
	mu      sync.Mutex
	jobs    map[string]*followed // continuous jobs being run, by id
	devices map[string]struct{}  // changed since the last look
	wake    chan struct{}        // buffered 1
}

// followed is one continuous job being run.
type followed struct {
	cond *query.Query
	// rescan asks for a look over the whole fleet (under follower.mu).
	rescan bool
	// more is signalled (buffered 1) when devices were added to the job.
	more chan struct{}
}

func newFollower() *follower {
	return &follower{jobs: map[string]*followed{}, devices: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

func (f *follower) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// DeviceChanged tells the engine that a device's registry entry or twin
// changed (after the change committed), so that the continuous jobs being
// run can target it if it now matches. It does not block; with no
// continuous job running it costs a lock.
func (s *Service) DeviceChanged(deviceID string) {
	f := s.follow
	f.mu.Lock()
	if len(f.jobs) == 0 {
		f.mu.Unlock()
		return
	}
	if len(f.devices) < maxFollowed {
		f.devices[deviceID] = struct{}{}
	} else {
		// Too many to check one by one: a rescan finds them all.
		clear(f.devices)
		for _, j := range f.jobs {
			j.rescan = true
		}
	}
	f.mu.Unlock()
	f.poke()
}

// followJob starts following a continuous job whose runner is starting;
// rescan asks for a look over the whole fleet first (a job that started
// before this runner). The returned function stops following it.
func (s *Service) followJob(id string, cond *query.Query, rescan bool) (*followed, func()) {
	f := s.follow
	j := &followed{cond: cond, rescan: rescan, more: make(chan struct{}, 1)}
	f.mu.Lock()
	f.jobs[id] = j
	f.mu.Unlock()
	if rescan {
		f.poke()
	}
	return j, func() {
		f.mu.Lock()
		if f.jobs[id] == j {
			delete(f.jobs, id)
		}
		if len(f.jobs) == 0 {
			clear(f.devices)
		}
		f.mu.Unlock()
	}
}

// runFollower adds changed devices to the continuous jobs being run until
// ctx ends, and rescans the fleet for each every ContinuousRescan.
func (s *Service) runFollower(ctx context.Context) {
	f := s.follow
	period := make(chan struct{}, 1)
	arm := func() interface{ Stop() bool } {
		return s.clock.AfterFunc(s.cfg.ContinuousRescan, func() {
			select {
			case period <- struct{}{}:
			default:
			}
		})
	}
	tick := arm()
	defer func() { tick.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-period:
			f.mu.Lock()
			for _, j := range f.jobs {
				j.rescan = true
			}
			f.mu.Unlock()
			tick = arm()
		case <-f.wake:
		}
		f.mu.Lock()
		ids := slices.Sorted(maps.Keys(f.devices))
		clear(f.devices)
		jobs := maps.Clone(f.jobs)
		rescans := map[string]bool{}
		for id, j := range f.jobs {
			if j.rescan {
				rescans[id], j.rescan = true, false
			}
		}
		f.mu.Unlock()
		for id, j := range jobs {
			if rescans[id] {
				s.addDevices(ctx, id, j, nil)
				continue
			}
			for batch := range slices.Chunk(ids, followBatch) {
				s.addDevices(ctx, id, j, batch)
			}
		}
	}
}

// addDevices adds the devices among ids (nil: every device) that match a
// continuous job and tells its runner. A store failure is logged, and the
// next rescan tries again.
func (s *Service) addDevices(ctx context.Context, id string, j *followed, ids []string) {
	n, err := s.store.AddDevices(ctx, id, j.cond, ids, s.clock.Now())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("add devices to a continuous job", "job_id", id, "op", "follow", "err", err)
		}
		return
	}
	if n == 0 {
		return
	}
	s.log.Info("devices added to a continuous job", "job_id", id, "devices", n)
	select {
	case j.more <- struct{}{}:
	default:
	}
}
