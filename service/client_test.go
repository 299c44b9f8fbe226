package service_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

// The service SDK's errors are *herd.Error with the hub's code and the
// HTTP status it came with.
func TestErrorKeepsStatus(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "dev1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		call   func() error
		code   herd.ErrorCode
		status int
	}{
		{"unknown device", func() error { _, err := h.Service.GetDevice(ctx, "nobody"); return err }, herd.ErrDeviceNotFound, 404},
		{"device exists", func() error { _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "dev1"}); return err }, herd.ErrDeviceAlreadyExists, 409},
		{"stale etag", func() error {
			_, err := h.Service.UpdateTwin(ctx, "dev1", herd.TwinPatch{Tags: map[string]any{"a": 1}}, "stale")
			return err
		}, herd.ErrPreconditionFailed, 412},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var e *herd.Error
			if !errors.As(err, &e) || !herd.IsCode(err, tt.code) || e.Status != tt.status {
				t.Fatalf("got %#v, want code %s and status %d", err, tt.code, tt.status)
			}
		})
	}
}

// connStates records the state of every connection a server sees.
type connStates struct {
	mu     sync.Mutex
	states map[net.Conn]http.ConnState
}

func (s *connStates) set(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[c] = st
}

// count returns how many connections are in state st.
func (s *connStates) count(st http.ConnState) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.states {
		if v == st {
			n++
		}
	}
	return n
}

// Close releases idle connections, closes those of calls still running as
// they finish, and makes later calls fail with ErrClosed without reaching
// the hub. A second Close does nothing.
func TestClose(t *testing.T) {
	var mu sync.Mutex
	hits := 0
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		if r.URL.Path == "/devices/slow" {
			entered <- struct{}{}
			<-release
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"deviceId":"dev1"}`))
	}))
	states := &connStates{states: map[net.Conn]http.ConnState{}}
	srv.Config.ConnState = states.set
	srv.Start()
	defer srv.Close()
	defer unblock() // before srv.Close, which waits for the handler
	c, err := service.New("HostName=hub.example;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0", service.WithEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// A call that is still running when Close is called, on one
	// connection, and a finished one whose connection is idle.
	slow := make(chan error, 1)
	go func() {
		_, err := c.GetDevice(ctx, "slow")
		slow <- err
	}()
	<-entered
	if _, err := c.GetDevice(ctx, "dev1"); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return states.count(http.StateIdle) == 1 }, "no idle connection")

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return states.count(http.StateClosed) == 1 }, "the idle connection was not closed")
	if n := states.count(http.StateActive); n != 1 {
		t.Fatalf("%d active connections, want the running call's", n)
	}
	unblock()
	if err := <-slow; err != nil {
		t.Fatalf("the call in flight: %v", err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return states.count(http.StateClosed) == 2 }, "the running call's connection was kept")

	mu.Lock()
	before := hits
	mu.Unlock()
	if _, err := c.GetDevice(ctx, "dev1"); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	if err := c.MonitorEvents(ctx, "", service.EventHandler{}); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("MonitorEvents after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != before {
		t.Fatalf("%d requests reached the hub after Close", hits-before)
	}
}

// PauseJob and ResumeJob move a job to paused and back.
func TestPauseAndResumeJob(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	start := time.Now().Add(time.Hour)
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "later", "*", herd.TwinPatch{Tags: map[string]any{"x": 1}},
		service.JobOptions{StartTime: start}); err != nil {
		t.Fatal(err)
	}
	if j, err := h.Service.PauseJob(ctx, "later"); err != nil || j.Status != herd.JobPaused {
		t.Fatalf("pause: %+v %v", j, err)
	}
	if j, err := h.Service.ResumeJob(ctx, "later"); err != nil || j.Status == herd.JobPaused || j.EndTime != nil {
		t.Fatalf("resume: %+v %v", j, err)
	}
	if _, err := h.Service.PauseJob(ctx, "nope"); !herd.IsCode(err, herd.ErrJobNotFound) {
		t.Errorf("pause unknown: %v", err)
	}
}

// PreviewDeviceMethod and PreviewTwinUpdate report the target set and the
// estimate, with or without a job id, and schedule nothing; the options
// go with the job (a bad one is refused as scheduling would refuse it).
func TestPreviewJob(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	for _, id := range []string{"p1", "p2", "p3"} {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	opts := service.JobOptions{Herd: &herd.JobOptions{Rollout: &herd.Rollout{MaxPerMinute: 60}}}
	p, err := h.Service.PreviewDeviceMethod(ctx, "", "*", herd.MethodRequest{MethodName: "m"}, opts, 2)
	if err != nil || p.DeviceCount != 3 || p.DisconnectedCount != 3 || len(p.SampleDeviceIDs) != 2 || !strings.Contains(p.Estimate, "pace") {
		t.Fatalf("method preview: %+v %v", p, err)
	}
	p, err = h.Service.PreviewTwinUpdate(ctx, "tw", "deviceId = 'p2'", herd.TwinPatch{Tags: map[string]any{"x": 1}}, service.JobOptions{}, 0)
	if err != nil || p.DeviceCount != 1 || p.JobID != "tw" || len(p.SampleDeviceIDs) != 1 || p.SampleDeviceIDs[0] != "p2" {
		t.Fatalf("twin preview: %+v %v", p, err)
	}
	bad := service.JobOptions{Herd: &herd.JobOptions{Rollout: &herd.Rollout{Waves: []herd.Wave{{Percent: 50}, {Percent: 5}}}}}
	if _, err := h.Service.PreviewTwinUpdate(ctx, "", "*", herd.TwinPatch{Tags: map[string]any{"x": 1}}, bad, 0); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("bad waves: %v", err)
	}
	if jobs, _ := h.Service.ListJobs(ctx, service.JobFilter{}); len(jobs) != 0 {
		t.Errorf("a preview stored %d jobs", len(jobs))
	}
}

// FollowJob streams a job to its end, with each device's record when
// asked; WaitJob uses the stream; an unknown job is JobNotFound.
func TestFollowJob(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	for _, id := range []string{"f1", "f2", "f3"} {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "tw", "*", herd.TwinPatch{Tags: map[string]any{"x": 1}},
		service.JobOptions{StartTime: time.Now().Add(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	var progress int
	var devices []string
	j, err := h.Service.FollowJob(ctx, "tw", service.JobHandler{
		Progress: func(*herd.Job) error { progress++; return nil },
		Device:   func(d *herd.DeviceJob) error { devices = append(devices, d.DeviceID+":"+string(d.Status)); return nil },
	})
	if err != nil || j.Status != herd.JobCompleted || !service.Ended(j) {
		t.Fatalf("FollowJob: %+v %v", j, err)
	}
	if progress < 2 || strings.Join(devices, ",") != "f1:completed,f2:completed,f3:completed" {
		t.Errorf("%d progress calls, devices %v", progress, devices)
	}
	if j, err := h.Service.WaitJob(ctx, "tw", nil); err != nil || j.Status != herd.JobCompleted {
		t.Errorf("WaitJob of an ended job: %+v %v", j, err)
	}
	if _, err := h.Service.FollowJob(ctx, "nope", service.JobHandler{}); !herd.IsCode(err, herd.ErrJobNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	if _, err := h.Service.WaitJob(ctx, "nope", nil); !herd.IsCode(err, herd.ErrJobNotFound) {
		t.Errorf("WaitJob of an unknown job: %v", err)
	}
}
