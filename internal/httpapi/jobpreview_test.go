package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/sim"
	"github.com/herd-iot/herd/service"
)

// simFleet registers n devices, the first half tagged building 43, and
// connects the first connected of them through the in-memory transport.
func simFleet(t *testing.T, h *hubtest.Hub, n, connected int) []sim.Identity {
	t.Helper()
	tags, err := sim.ParseTags("building=43:50%,44:50%")
	if err != nil {
		t.Fatal(err)
	}
	prov, err := sim.Provision(context.Background(), h.Service, sim.DeviceIDs("p-", n), tags, true, 4)
	if err != nil {
		t.Fatal(err)
	}
	if connected > 0 {
		f := sim.New(sim.Config{Host: h.Hostname(), Dial: sim.Pipe(h.Gateway.ServeConn), Devices: prov.Identities[:connected], ReportDesired: true})
		if err := f.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Disconnect)
	}
	return prov.Identities
}

func TestJobPreview(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	simFleet(t, h, 30, 10) // 15 in building 43, 10 of them connected
	preview := func(policy, query, body string) (*http.Response, []byte) {
		return r.do(http.MethodPost, "/jobs/v2/preview"+v+query, body, map[string]string{
			"Authorization": r.token(policy), "Content-Type": "application/json"})
	}
	methodJob := `{"type":"scheduleDeviceMethod","queryCondition":"tags.building = 43","cloudToDeviceMethod":{"methodName":"lockDoor","responseTimeoutInSeconds":10}}`
	twinJob := `{"type":"scheduleUpdateTwin","queryCondition":"tags.building = 43","updateTwin":{"etag":"*","properties":{"desired":{"floor":3}}}}`

	// The registry records connection states in batches: wait until the
	// store has them.
	var p job.Preview
	hubtest.Eventually(t, 10*time.Second, func() bool {
		resp, body := preview("iothubowner", "", methodJob)
		if resp.StatusCode != 200 {
			t.Fatalf("preview: %d %s", resp.StatusCode, body)
		}
		p = job.Preview{}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		return p.ConnectedCount == 10
	}, "the preview does not count 10 connected devices: %+v", &p)
	if p.DeviceCount != 15 || p.DisconnectedCount != 5 || p.Type != herd.JobDeviceMethod || p.QueryCondition != "tags.building = 43" {
		t.Errorf("preview %+v, want 15 devices, 10 connected, 5 disconnected", p)
	}
	if len(p.SampleDeviceIDs) != job.DefaultPreviewSample || p.SampleDeviceIDs[0] != "p-000000" || p.SampleDeviceIDs[9] != "p-000009" {
		t.Errorf("sample %v, want the first %d devices in id order", p.SampleDeviceIDs, job.DefaultPreviewSample)
	}
	if p.EstimatedDurationInSeconds <= 0 || p.MaxDurationInSeconds != 10 || !strings.Contains(p.Estimate, "method job") || p.StartTime == nil {
		t.Errorf("estimate %v s, at worst %v s (want one 10 s response timeout): %q", p.EstimatedDurationInSeconds, p.MaxDurationInSeconds, p.Estimate)
	}

	t.Run("sample size", func(t *testing.T) {
		for query, want := range map[string]int{"&sample=3": 3, "&sample=1000": 15} {
			resp, body := preview("iothubowner", query, twinJob)
			var p job.Preview
			if resp.StatusCode != 200 || json.Unmarshal(body, &p) != nil || len(p.SampleDeviceIDs) != want {
				t.Errorf("%s: %d %s, want %d ids", query, resp.StatusCode, body, want)
			}
		}
		resp, body := preview("iothubowner", "&sample=x", twinJob)
		expectError(t, resp, body, 400, herd.ErrArgumentInvalid)
	})
	t.Run("every device", func(t *testing.T) {
		resp, body := preview("iothubowner", "", strings.Replace(twinJob, "tags.building = 43", "*", 1))
		var p job.Preview
		if resp.StatusCode != 200 || json.Unmarshal(body, &p) != nil || p.DeviceCount != 30 || p.ConnectedCount != 10 {
			t.Errorf("%d %s, want 30 devices, 10 connected", resp.StatusCode, body)
		}
	})
	t.Run("validation as PUT", func(t *testing.T) {
		for _, tc := range []struct {
			name, body string
			status     int
			code       herd.ErrorCode
		}{
			{"bad condition", strings.Replace(twinJob, "tags.building = 43", "tags.building == 43", 1), 400, herd.ErrArgumentInvalid},
			{"condition with a tail", strings.Replace(twinJob, "tags.building = 43", "tags.building = 43 GROUP BY deviceId", 1), 400, herd.ErrArgumentInvalid},
			{"no type", `{"queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}}}`, 400, herd.ErrArgumentNull},
			{"etag not *", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"x","tags":{"a":1}}}`, 400, herd.ErrArgumentInvalid},
			{"bad id", `{"jobId":"a b","type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}}}`, 400, herd.ErrArgumentInvalid},
			{"empty", ``, 400, herd.ErrArgumentNull},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, body := preview("iothubowner", "", tc.body)
				expectError(t, resp, body, tc.status, tc.code)
			})
		}
		// An id is allowed, and echoed.
		resp, body := preview("iothubowner", "", `{"jobId":"fw-2",`+twinJob[1:])
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"jobId":"fw-2"`) {
			t.Errorf("with an id: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("rights", func(t *testing.T) {
		for _, tc := range []struct {
			policy, body string
			ok           bool
		}{
			{"service", methodJob, true},
			{"service", twinJob, true},
			{"registryReadWrite", twinJob, true},
			{"registryReadWrite", methodJob, false},
			{"registryRead", twinJob, false},
			{"device", twinJob, false},
		} {
			resp, body := preview(tc.policy, "", tc.body)
			if tc.ok && resp.StatusCode != 200 {
				t.Errorf("%s: %d %s", tc.policy, resp.StatusCode, body)
			}
			if !tc.ok {
				expectError(t, resp, body, 401, herd.ErrUnauthorized)
			}
		}
	})
	// Nothing was written; a job named "preview" is still an ordinary id.
	if jobs, err := h.Service.ListJobs(context.Background(), service.JobFilter{}); err != nil || len(jobs) != 0 {
		t.Errorf("previews stored %d jobs (%v)", len(jobs), err)
	}
	resp, body := r.do(http.MethodGet, "/jobs/v2/preview"+v, "", nil)
	expectError(t, resp, body, 404, herd.ErrJobNotFound)
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ name, data string }

// readEvents reads a stream's events until it ends.
func readEvents(t *testing.T, resp *http.Response, got chan<- sseEvent) {
	defer close(got)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var e sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			e.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			e.data = strings.TrimPrefix(line, "data: ")
		case line == "" && e.name != "":
			got <- e
			e = sseEvent{}
		}
	}
}

// stream opens GET /jobs/v2/{id}/events with a policy's token; extra is
// more of the query string ("&devices=true").
func stream(t *testing.T, r *raw, policy, id string, extra ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.h.URL+"/jobs/v2/"+id+"/events"+v+strings.Join(extra, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", r.token(policy))
	resp, err := r.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestJobEvents(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	simFleet(t, h, 40, 40)
	ctx := context.Background()
	// A method job that starts in a moment, so the stream sees it before.
	start := time.Now().Add(500 * time.Millisecond)
	if _, err := h.Service.ScheduleDeviceMethod(ctx, "lock", "*", herd.MethodRequest{MethodName: "lockDoor", ResponseTimeoutInSeconds: 10},
		service.JobOptions{StartTime: start}); err != nil {
		t.Fatal(err)
	}
	resp := stream(t, r, "registryRead", "lock") // read rights suffice
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	got := make(chan sseEvent, 100)
	go readEvents(t, resp, got)
	var events []herd.Job
	var statuses []string
	deadline := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case e, ok := <-got:
			if !ok {
				t.Fatalf("the stream ended without an end event after %d events", len(events))
			}
			if e.name == "status" {
				var s struct{ Status string }
				if err := json.Unmarshal([]byte(e.data), &s); err != nil {
					t.Fatalf("status event: %v: %s", err, e.data)
				}
				statuses = append(statuses, s.Status)
				continue
			}
			var j herd.Job
			if err := json.Unmarshal([]byte(e.data), &j); err != nil {
				t.Fatalf("event %s: %v: %s", e.name, err, e.data)
			}
			events = append(events, j)
			done = e.name == "end"
			if !done && e.name != "progress" {
				t.Errorf("event %q, want progress or end", e.name)
			}
		case <-deadline:
			t.Fatalf("no end event within 30 s; %d events", len(events))
		}
	}
	first, last := events[0], events[len(events)-1]
	if first.Status.Terminal() {
		t.Errorf("the first event is the job as it was before it ran, not %s", first.Status)
	}
	st := last.DeviceJobStatistics
	if last.Status != herd.JobCompleted || last.EndTime == nil || st.DeviceCount != 40 || st.SucceededCount != 40 {
		t.Errorf("the end event: %s, %+v", last.Status, st)
	}
	// Each status change is told as such; the last is completed.
	if len(statuses) == 0 || statuses[len(statuses)-1] != "completed" {
		t.Errorf("status events %v, want them to end with completed", statuses)
	}
	// Coalesced: a handful of events, not one per device or batch.
	if len(events) > 20 {
		t.Errorf("%d events for a job of a second", len(events))
	}
	if _, ok := <-got; ok {
		t.Error("the stream went on after its end event")
	}

	t.Run("waves", func(t *testing.T) {
		opts := service.JobOptions{Herd: &herd.JobOptions{Rollout: &herd.Rollout{Waves: []herd.Wave{{Percent: 10}}, PauseBetweenWaves: true}}}
		if _, err := h.Service.ScheduleDeviceMethod(ctx, "canary", "*", herd.MethodRequest{MethodName: "lockDoor"},
			service.JobOptions{StartTime: time.Now().Add(300 * time.Millisecond), Herd: opts.Herd}); err != nil {
			t.Fatal(err)
		}
		got := make(chan sseEvent, 100)
		go readEvents(t, stream(t, r, "iothubowner", "canary"), got)
		var seen []string
		deadline := time.After(30 * time.Second)
	read:
		for {
			select {
			case e, ok := <-got:
				if !ok {
					t.Fatalf("the stream ended without an end event: %v", seen)
				}
				switch e.name {
				case "status", "wave":
					seen = append(seen, e.name+" "+e.data)
				case "end":
					break read
				}
				if e.name == "status" && strings.Contains(e.data, `"status":"paused"`) {
					if _, err := h.Service.ResumeJob(ctx, "canary"); err != nil {
						t.Fatal(err)
					}
				}
			case <-deadline:
				t.Fatalf("no end within 30 s: %v", seen)
			}
		}
		// The changes are coalesced, so "running" may not be seen on its
		// own; the pause, the wave and the end are.
		all := strings.Join(seen, "\n")
		paused := strings.Index(all, `status {"failureReason":"","status":"paused"}`)
		wave := strings.Index(all, `wave {"wave":2,"waves":2}`)
		if paused < 0 || wave < 0 || !strings.HasSuffix(all, `status {"failureReason":"","status":"completed"}`) {
			t.Errorf("events:\n%s", all)
		}
	})
	t.Run("devices", func(t *testing.T) {
		// Every device's final record once, before the end event.
		if _, err := h.Service.ScheduleDeviceMethod(ctx, "each", "*", herd.MethodRequest{MethodName: "lockDoor", ResponseTimeoutInSeconds: 10},
			service.JobOptions{StartTime: time.Now().Add(300 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		got := make(chan sseEvent, 1000)
		go readEvents(t, stream(t, r, "registryRead", "each", "&devices=true"), got)
		seen := map[string]int{}
		var end herd.Job
		for e := range got {
			switch e.name {
			case "device":
				var d herd.DeviceJob
				if err := json.Unmarshal([]byte(e.data), &d); err != nil {
					t.Fatalf("device event: %v: %s", err, e.data)
				}
				if d.JobID != "each" || d.Status != herd.DeviceJobCompleted || d.Outcome == nil || d.Outcome.DeviceMethodResponse == nil || d.Attempts != 1 {
					t.Errorf("device event: %s", e.data)
				}
				seen[d.DeviceID]++
			case "end":
				json.Unmarshal([]byte(e.data), &end)
			case "lagged":
				t.Errorf("lagged: %s", e.data)
			}
		}
		if end.DeviceJobStatistics == nil || end.DeviceJobStatistics.SucceededCount != 40 || len(seen) != 40 {
			t.Fatalf("%d devices told, end %+v", len(seen), end.DeviceJobStatistics)
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("%s told %d times", id, n)
			}
		}
		// A cancel tells the devices it cancels.
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "ghost", Status: herd.DeviceEnabled}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Service.ScheduleDeviceMethod(ctx, "wait", "deviceId = 'ghost'", herd.MethodRequest{MethodName: "lockDoor", ConnectTimeoutInSeconds: 120},
			service.JobOptions{}); err != nil {
			t.Fatal(err)
		}
		got = make(chan sseEvent, 10)
		go readEvents(t, stream(t, r, "registryRead", "wait", "&devices=true"), got)
		<-got // the job as it is
		hubtest.Eventually(t, 10*time.Second, func() bool {
			j, err := h.Service.GetJob(ctx, "wait")
			return err == nil && j.DeviceJobStatistics.PendingCount == 1
		}, "ghost waited for")
		if _, err := h.Service.CancelJob(ctx, "wait"); err != nil {
			t.Fatal(err)
		}
		var names []string
		for e := range got {
			if e.name == "device" && !strings.Contains(e.data, `"deviceId":"ghost"`) || e.name == "device" && !strings.Contains(e.data, `"status":"canceled"`) {
				t.Errorf("device event: %s", e.data)
			}
			if e.name != "progress" {
				names = append(names, e.name)
			}
		}
		// (A status event of the start may come first.)
		if all := strings.Join(names, " "); !strings.HasSuffix(all, "device status end") || strings.Count(all, "device") != 1 {
			t.Errorf("events after the cancel: %v", names)
		}
		resp := stream(t, r, "registryRead", "wait", "&devices=maybe")
		if resp.StatusCode != 400 {
			t.Errorf("devices=maybe: %d", resp.StatusCode)
		}
	})
	t.Run("ended job", func(t *testing.T) {
		got := make(chan sseEvent, 10)
		go readEvents(t, stream(t, r, "iothubowner", "lock"), got)
		e := <-got
		if e.name != "end" || !strings.Contains(e.data, `"status":"completed"`) {
			t.Errorf("first event of an ended job: %+v", e)
		}
	})
	t.Run("unknown job", func(t *testing.T) {
		resp := stream(t, r, "iothubowner", "nope")
		if resp.StatusCode != 404 || resp.Header.Get("iothub-errorcode") != string(herd.ErrJobNotFound) {
			t.Errorf("status %d, code %q", resp.StatusCode, resp.Header.Get("iothub-errorcode"))
		}
	})
	t.Run("device policy", func(t *testing.T) {
		if resp := stream(t, r, "device", "lock"); resp.StatusCode != 401 {
			t.Errorf("status %d, want 401", resp.StatusCode)
		}
	})
}
