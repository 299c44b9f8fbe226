package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

var jobTests = []struct {
	name string
	fn   func(*testing.T, Store)
}{
	{"CreateGetList", testJobCreateGetList},
	{"TwinBatchMatchesApply", testTwinBatchMatchesApply},
	{"TwinBatchLimitsAndDeletedDevices", testTwinBatchEdges},
	{"TwinBatchSaysWhereDevicesAreConnected", testTwinBatchWhere},
	{"MethodDeviceLifecycle", testMethodDeviceLifecycle},
	{"Retries", testRetries},
	{"ManyDistinctOutcomes", testManyDistinctOutcomes},
	{"CancelAndExpire", testCancelAndExpire},
	{"PauseResumeAbort", testPauseResumeAbort},
	{"Purge", testPurge},
	{"Continuous", testContinuous},
	{"EndedDevices", testEndedDevices},
}

// everyDevice is the condition "*".
var everyDevice = mustParse("*")

// mustParse parses a job's queryCondition.
func mustParse(cond string) *query.Query {
	q, err := query.ParseCondition(cond)
	if err != nil {
		panic(fmt.Sprintf("storetest: condition %q: %v", cond, err))
	}
	return q
}

func newJob(t *testing.T, id string, typ herd.JobType, body string) *job.Record {
	t.Helper()
	r, err := job.ParseRequest(id, []byte(body), t0)
	if err != nil {
		t.Fatalf("ParseRequest(%s): %v", body, err)
	}
	if r.Type != typ {
		t.Fatalf("type %s", r.Type)
	}
	return r
}

func twinJob(t *testing.T, s JobStore, id, patch string) *job.Record {
	t.Helper()
	r := newJob(t, id, herd.JobUpdateTwin, `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":`+patch+`}`)
	if err := s.CreateJob(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func methodJob(t *testing.T, s JobStore, id string) *job.Record {
	t.Helper()
	r := newJob(t, id, herd.JobDeviceMethod, `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot"}}`)
	if err := s.CreateJob(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkStats fails unless the job's statistics add up and equal want.
func checkStats(t *testing.T, s JobStore, id string, want herd.DeviceJobStatistics) *job.Record {
	t.Helper()
	r, err := s.Job(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	st := *r.DeviceJobStatistics
	if st.DeviceCount != st.SucceededCount+st.FailedCount+st.RunningCount+st.PendingCount {
		t.Errorf("job %s statistics do not add up: %+v", id, st)
	}
	if st != want {
		t.Errorf("job %s statistics = %+v, want %+v", id, st, want)
	}
	return r
}

func testJobCreateGetList(t *testing.T, s JobStore) {
	ctx := context.Background()
	a := twinJob(t, s, "job-a", `{"etag":"*","tags":{"x":1}}`)
	methodJob(t, s, "job-b")
	if err := s.CreateJob(ctx, a); !herd.IsCode(err, herd.ErrJobAlreadyExists) {
		t.Errorf("duplicate: %v, want JobAlreadyExists", err)
	}
	if _, err := s.Job(ctx, "nope"); !herd.IsCode(err, herd.ErrJobNotFound) {
		t.Errorf("unknown job: %v, want JobNotFound", err)
	}
	got, err := s.Job(ctx, "job-a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != herd.JobQueued || got.QueryCondition != "*" || got.MaxExecutionTimeInSeconds != 3600 ||
		!got.CreatedTime.Equal(t0) || got.UpdateTwin == nil || got.UpdateTwin.ETag != "*" || got.EndTime != nil {
		t.Errorf("job read back: %+v", got.Job)
	}
	if string(got.Request) != `{"etag":"*","tags":{"x":1}}` {
		t.Errorf("request = %s", got.Request)
	}
	m, err := s.Job(ctx, "job-b")
	if err != nil || m.CloudToDeviceMethod == nil || m.CloudToDeviceMethod.MethodName != "reboot" ||
		m.CloudToDeviceMethod.ResponseTimeoutInSeconds != 30 || string(m.CloudToDeviceMethod.Payload) != "null" {
		t.Errorf("method job read back: %+v %v", m, err)
	}
	for i := range 5 {
		methodJob(t, s, fmt.Sprintf("job-c%d", i))
	}
	listAll := func(newest bool) []string {
		t.Helper()
		var all []string
		after := ""
		for pages := 0; ; pages++ {
			page, next, err := s.ListJobs(ctx, job.ListFilter{After: after, Limit: 3, Newest: newest})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page {
				all = append(all, r.JobID)
			}
			if next == "" {
				break
			}
			if pages > 5 {
				t.Fatal("paging does not end")
			}
			after = next
		}
		return all
	}
	all := listAll(false)
	if len(all) != 7 || !slices.Contains(all, "job-a") || !slices.Contains(all, "job-c4") {
		t.Errorf("all pages = %v", all)
	}
	// Newest first: the same jobs, in the opposite order, across pages.
	newest := listAll(true)
	slices.Reverse(newest)
	if !slices.Equal(newest, all) {
		t.Errorf("newest first, reversed = %v, want %v", newest, all)
	}
	page, next, err := s.ListJobs(ctx, job.ListFilter{Type: herd.JobUpdateTwin, Limit: 3})
	if err != nil || len(page) != 1 || page[0].JobID != "job-a" || next != "" {
		t.Errorf("type filter: %d jobs, next %q, %v", len(page), next, err)
	}
	page, _, err = s.ListJobs(ctx, job.ListFilter{Status: herd.JobCompleted, Limit: 3})
	if err != nil || len(page) != 0 {
		t.Errorf("status filter: %d jobs, %v", len(page), err)
	}
	if _, _, err := s.ListJobs(ctx, job.ListFilter{After: "garbage!", Limit: 3}); !herd.IsCode(err, herd.ErrArgumentInvalid) {
		t.Errorf("bad continuation: %v", err)
	}
}

// randomValue returns a random twin value (objects nest up to depth).
func randomValue(r *rand.Rand, depth int) any {
	switch n := r.Intn(7); {
	case n == 0 && depth > 0:
		return randomObject(r, depth-1, true)
	case n == 1:
		return json.Number(fmt.Sprint(r.Intn(1000)))
	case n == 2:
		return r.Intn(2) == 0
	case n == 3:
		return []any{json.Number("1"), "two"}
	case n == 4:
		return nil
	default:
		return fmt.Sprintf("v%d", r.Intn(100))
	}
}

func randomObject(r *rand.Rand, depth int, nulls bool) map[string]any {
	m := map[string]any{}
	for range r.Intn(4) + 1 {
		v := randomValue(r, depth)
		if v == nil && !nulls {
			continue
		}
		m[[]string{"a", "b", "c", "d"}[r.Intn(4)]] = v
	}
	return m
}

func canonical(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var x any
	if err := json.Unmarshal(b, &x); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(x)
	return string(b)
}

// testTwinBatchMatchesApply checks that a batch patches every twin exactly
// as twin.Doc.Apply does: merge, versions, etag and $metadata.
func testTwinBatchMatchesApply(t *testing.T, s JobStore) {
	ctx := context.Background()
	r := rand.New(rand.NewSource(7))
	for round := range 12 {
		// Devices with random twins.
		var ids []string
		expect := map[string]*twin.Doc{}
		var ops []registry.Op
		for i := range 8 {
			id := fmt.Sprintf("r%02d-d%d", round, i)
			ids = append(ids, id)
			doc := twin.NewDoc(t0)
			for range r.Intn(3) {
				p := twin.Patch{Tags: twin.Change{Set: true, Value: randomObject(r, 2, false)},
					Desired: twin.Change{Set: true, Value: randomObject(r, 2, false)}}
				if _, err := doc.Apply(p, false, t0); err != nil {
					t.Fatal(err)
				}
			}
			ops = append(ops, registry.Op{Kind: registry.OpCreate, DeviceID: id, Device: device(id), Twin: doc})
		}
		if _, err := s.ApplyDevices(ctx, ops); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			_, doc, err := s.Twin(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			expect[id] = doc
		}
		// A random job patch: some rounds clear a section.
		var p twin.Patch
		switch round % 4 {
		case 0:
			p.Tags = twin.Change{Set: true, Value: randomObject(r, 2, true)}
		case 1:
			p.Desired = twin.Change{Set: true, Value: randomObject(r, 3, true)}
		case 2:
			p.Tags = twin.Change{Set: true, Value: randomObject(r, 2, true)}
			p.Desired = twin.Change{Set: true, Value: randomObject(r, 3, true)}
		case 3:
			p.Tags = twin.Change{Set: round%8 == 3, Value: nil}
			p.Desired = twin.Change{Set: true, Value: nil}
		}
		body := map[string]any{"etag": "*"}
		if p.Tags.Set {
			body["tags"] = p.Tags.Value
		}
		if p.Desired.Set {
			body["properties"] = map[string]any{"desired": p.Desired.Value}
		}
		b, _ := json.Marshal(body)
		jid := fmt.Sprintf("job-%d", round)
		twinJob(t, s, jid, string(b))
		cond := mustParse(fmt.Sprintf("STARTSWITH(deviceId, 'r%02d-')", round))
		now := t0.Add(time.Duration(round+1) * time.Minute)
		if _, err := s.StartJob(ctx, jid, cond, now); err != nil {
			t.Fatal(err)
		}
		stored, err := s.Job(ctx, jid)
		if err != nil {
			t.Fatal(err)
		}
		jp, err := job.Patch(stored)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.ApplyTwinBatch(ctx, jid, jp, "", 100, now)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Done || len(res.Updated) != len(ids) || res.Failed != 0 {
			t.Fatalf("round %d: batch result %+v", round, res)
		}
		versions := map[string]int64{}
		for _, u := range res.Updated {
			versions[u.DeviceID] = u.DesiredVersion
		}
		for _, id := range ids {
			want := expect[id]
			up, err := want.Apply(jp, false, now)
			if err != nil {
				t.Fatal(err)
			}
			_, got, err := s.Twin(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct {
				name      string
				got, want any
			}{
				{"tags", got.Tags, want.Tags}, {"desired", got.Desired, want.Desired},
				{"desired $metadata", got.DesiredMeta, want.DesiredMeta},
				{"versions", []int64{got.Version, got.ETag, got.DesiredVersion, got.ReportedVersion},
					[]int64{want.Version, want.ETag, want.DesiredVersion, want.ReportedVersion}},
			} {
				if g, w := canonical(t, f.got), canonical(t, f.want); g != w {
					t.Errorf("round %d %s %s:\n got %s\nwant %s\npatch %s", round, id, f.name, g, w, b)
				}
			}
			if versions[id] != up.DesiredVersion {
				t.Errorf("round %d %s: batch says desired version %d, want %d", round, id, versions[id], up.DesiredVersion)
			}
		}
		checkStats(t, s, jid, herd.DeviceJobStatistics{DeviceCount: 8, SucceededCount: 8})
	}
}

// testTwinBatchWhere: a twin batch says which node holds each device's
// connection, for its notification: a cluster sends it there alone, and
// nowhere for a device that is not connected.
func testTwinBatchWhere(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "w1", "w2", "w3", "w4")
	if err := s.SetConnectionStates(ctx, []registry.ConnectionChange{
		{DeviceID: "w1", Node: "node-1", State: herd.Connected, StateAt: t0},
		{DeviceID: "w2", Node: "node-2", State: herd.Connected, StateAt: t0},
		{DeviceID: "w3", Node: "node-2", State: herd.Connected, StateAt: t0},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetConnectionStates(ctx, []registry.ConnectionChange{
		{DeviceID: "w3", Node: "node-2", State: herd.Disconnected, StateAt: t0.Add(time.Second)},
	}); err != nil {
		t.Fatal(err)
	}
	twinJob(t, s, "where", `{"etag":"*","properties":{"desired":{"on":true}}}`)
	if _, err := s.StartJob(ctx, "where", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	stored, _ := s.Job(ctx, "where")
	p, err := job.Patch(stored)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.ApplyTwinBatch(ctx, "where", p, "", 10, t0)
	if err != nil || !res.Done || len(res.Updated) != 4 {
		t.Fatalf("batch: %+v %v", res, err)
	}
	want := map[string]twin.Where{"w1": {Known: true, Node: "node-1"}, "w2": {Known: true, Node: "node-2"},
		"w3": {Known: true}, "w4": {Known: true}}
	for _, u := range res.Updated {
		if u.Where != want[u.DeviceID] {
			t.Errorf("%s: the batch saw it at %+v, want %+v", u.DeviceID, u.Where, want[u.DeviceID])
		}
	}
}

// testTwinBatchEdges covers a twin too large for the set-based path, a
// patch that would break a size limit, a device deleted after the
// snapshot, and batches with a cursor.
func testTwinBatchEdges(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "e1", "e2", "e3", "e4", "e5")
	big := map[string]any{}
	for i := range 35 {
		big[fmt.Sprintf("k%02d", i)] = fmt.Sprintf("%0200d", i) // ~7.1 KB of tags
	}
	if _, _, err := s.UpdateTwin(ctx, "e2", func(_ *herd.Device, d *twin.Doc) error {
		_, err := d.Apply(twin.Patch{Tags: twin.Change{Set: true, Value: big}}, false, t0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	twinJob(t, s, "edges", `{"etag":"*","tags":{"extra":"`+fmt.Sprintf("%01500d", 0)+`"},"properties":{"desired":{"on":true}}}`)
	if _, err := s.StartJob(ctx, "edges", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyDevices(ctx, []registry.Op{{Kind: registry.OpDelete, DeviceID: "e4", Change: func(*herd.Device) error { return nil }}}); err != nil {
		t.Fatal(err)
	}
	stored, _ := s.Job(ctx, "edges")
	p, err := job.Patch(stored)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.ApplyTwinBatch(ctx, "edges", p, "", 2, t0)
	if err != nil || res.Next != "e2" || res.Done || len(res.Updated) != 1 || res.Failed != 1 {
		t.Fatalf("first batch: %+v %v", res, err)
	}
	res, err = s.ApplyTwinBatch(ctx, "edges", p, res.Next, 2, t0)
	if err != nil || res.Next != "e4" || res.Done || len(res.Updated) != 1 || res.Failed != 1 {
		t.Fatalf("second batch: %+v %v", res, err)
	}
	res, err = s.ApplyTwinBatch(ctx, "edges", p, res.Next, 2, t0)
	if err != nil || !res.Done || len(res.Updated) != 1 {
		t.Fatalf("third batch: %+v %v", res, err)
	}
	r := checkStats(t, s, "edges", herd.DeviceJobStatistics{DeviceCount: 5, SucceededCount: 3, FailedCount: 2})
	if r.Status != herd.JobCompleted || r.EndTime == nil || r.StatusMessage == "" {
		t.Errorf("job after its last batch: %+v", r.Job)
	}
	djs, err := s.DeviceJobs(ctx, "edges")
	if err != nil || len(djs) != 5 {
		t.Fatalf("device records: %d %v", len(djs), err)
	}
	if d := djs[1]; d.Status != herd.DeviceJobFailed || d.Error == nil || d.Error.Code != string(herd.ErrArgumentInvalid) {
		t.Errorf("e2 (tags over 8 KB): %+v %+v", d, d.Error)
	}
	if d := djs[3]; d.Status != herd.DeviceJobFailed || d.Error == nil || d.Error.Code != string(herd.ErrDeviceNotFound) {
		t.Errorf("e4 (deleted): %+v", d)
	}
	if d := djs[0]; d.Status != herd.DeviceJobCompleted || d.Outcome != nil || d.EndTimeUTC.IsZero() || d.JobType != herd.JobUpdateTwin {
		t.Errorf("e1: %+v", d)
	}
	_, doc, _ := s.Twin(ctx, "e2")
	if _, ok := doc.Tags["extra"]; ok || doc.Desired["on"] != nil {
		t.Errorf("a failed device's twin changed: %v %v", doc.Tags["extra"] != nil, doc.Desired)
	}
}

func testMethodDeviceLifecycle(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "m1", "m2", "m3", "m4")
	methodJob(t, s, "mj")
	r, err := s.StartJob(ctx, "mj", everyDevice, t0)
	if err != nil || r.Status != herd.JobRunning || !r.Started.Equal(t0) {
		t.Fatalf("start: %+v %v", r, err)
	}
	checkStats(t, s, "mj", herd.DeviceJobStatistics{DeviceCount: 4, PendingCount: 4})
	ids, err := s.PendingDevices(ctx, "mj", "m1", 10)
	if err != nil || !slices.Equal(ids, []string{"m2", "m3", "m4"}) {
		t.Fatalf("pending after m1: %v %v", ids, err)
	}
	claimed, err := s.ClaimDevices(ctx, "mj", []string{"m1", "m2", "m3"}, t0)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if again, _ := s.ClaimDevices(ctx, "mj", []string{"m1"}, t0); len(again) != 0 {
		t.Errorf("a running device was claimed twice")
	}
	checkStats(t, s, "mj", herd.DeviceJobStatistics{DeviceCount: 4, PendingCount: 1, RunningCount: 3})
	err = s.FinishDevices(ctx, "mj", []job.Outcome{
		{DeviceID: "m1", Status: herd.DeviceJobCompleted, Response: &herd.MethodResult{Status: 200, Payload: json.RawMessage(`{"ok":true}`)}},
		{DeviceID: "m2", Status: herd.DeviceJobFailed, Error: &herd.DeviceJobError{Code: "GatewayTimeout", Description: "slow"}},
		{DeviceID: "m4", Status: herd.DeviceJobFailed, FromPending: true, Error: &herd.DeviceJobError{Code: "DeviceNotOnline", Description: "off"}},
		{DeviceID: "m4", Status: herd.DeviceJobCompleted}, // not running: ignored
	}, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	checkStats(t, s, "mj", herd.DeviceJobStatistics{DeviceCount: 4, SucceededCount: 1, FailedCount: 2, RunningCount: 1})
	n, err := s.InterruptRunning(ctx, "mj", herd.DeviceJobError{Code: job.ErrCodeInterrupted, Description: "x"}, t0.Add(2*time.Second))
	if err != nil || n != 1 {
		t.Fatalf("interrupt: %d %v", n, err)
	}
	r = checkStats(t, s, "mj", herd.DeviceJobStatistics{DeviceCount: 4, SucceededCount: 1, FailedCount: 3})
	if r.Status != herd.JobCompleted || r.EndTime == nil || !r.EndTime.Equal(t0.Add(2*time.Second)) {
		t.Errorf("job: %+v", r.Job)
	}
	djs, _ := s.DeviceJobs(ctx, "mj")
	if o := djs[0].Outcome; o == nil || o.DeviceMethodResponse == nil || o.DeviceMethodResponse.Status != 200 ||
		canonical(t, o.DeviceMethodResponse.Payload) != `{"ok":true}` || djs[0].StartTimeUTC.IsZero() {
		t.Errorf("m1 record: %+v", djs[0])
	}
	if e := djs[3].Error; djs[3].Status != herd.DeviceJobFailed || e == nil || e.Code != "DeviceNotOnline" || djs[3].StartTimeUTC.IsZero() {
		t.Errorf("m4 record: %+v", djs[3])
	}
	if e := djs[2].Error; e == nil || e.Code != job.ErrCodeInterrupted {
		t.Errorf("m3 record: %+v", djs[2])
	}
}

func testCancelAndExpire(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "c1", "c2", "c3")
	// Cancel before the start.
	methodJob(t, s, "early")
	if err := s.ScheduleJob(ctx, "early", t0); err != nil {
		t.Fatal(err)
	}
	r, err := s.CancelJob(ctx, "early", t0)
	if err != nil || r.Status != herd.JobCancelled || r.EndTime == nil {
		t.Fatalf("cancel queued: %+v %v", r, err)
	}
	if r, err := s.StartJob(ctx, "early", everyDevice, t0); err != nil || r.Status != herd.JobCancelled || r.DeviceJobStatistics.DeviceCount != 0 {
		t.Errorf("a cancelled job started: %+v %v", r, err)
	}
	// Cancel while running: pending devices are canceled, the running one
	// finishes and then the job ends.
	methodJob(t, s, "mid")
	if _, err := s.StartJob(ctx, "mid", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimDevices(ctx, "mid", []string{"c1"}, t0); err != nil {
		t.Fatal(err)
	}
	r, err = s.CancelJob(ctx, "mid", t0.Add(time.Second))
	if err != nil || r.Status != herd.JobCancelled || r.EndTime != nil {
		t.Fatalf("cancel running: %+v %v", r.Job, err)
	}
	checkStats(t, s, "mid", herd.DeviceJobStatistics{DeviceCount: 3, FailedCount: 2, RunningCount: 1})
	if err := s.FinishDevices(ctx, "mid", []job.Outcome{{DeviceID: "c1", Status: herd.DeviceJobCompleted,
		Response: &herd.MethodResult{Status: 200, Payload: json.RawMessage("null")}}}, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	r = checkStats(t, s, "mid", herd.DeviceJobStatistics{DeviceCount: 3, SucceededCount: 1, FailedCount: 2})
	if r.Status != herd.JobCancelled || r.EndTime == nil || !r.EndTime.Equal(t0.Add(2*time.Second)) {
		t.Errorf("cancelled job after its last running device: %+v", r.Job)
	}
	if again, err := s.CancelJob(ctx, "mid", t0.Add(time.Hour)); err != nil || !again.EndTime.Equal(t0.Add(2*time.Second)) {
		t.Errorf("cancelling an ended job changed it: %+v %v", again, err)
	}
	djs, _ := s.DeviceJobs(ctx, "mid")
	if djs[1].Status != herd.DeviceJobCanceled || djs[2].Status != herd.DeviceJobCanceled {
		t.Errorf("pending devices after cancel: %s %s", djs[1].Status, djs[2].Status)
	}
	if _, err := s.CancelJob(ctx, "nope", t0); !herd.IsCode(err, herd.ErrJobNotFound) {
		t.Errorf("cancel unknown: %v", err)
	}
	// Deadline: every device not done fails, the job fails.
	methodJob(t, s, "late")
	if _, err := s.StartJob(ctx, "late", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	s.ClaimDevices(ctx, "late", []string{"c2"}, t0)
	if err := s.ExpireJob(ctx, "late", herd.JobFailed, "too slow", herd.DeviceJobError{Code: job.ErrCodeDeadline, Description: "d"}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r = checkStats(t, s, "late", herd.DeviceJobStatistics{DeviceCount: 3, FailedCount: 3})
	if r.Status != herd.JobFailed || r.FailureReason != "too slow" || r.EndTime == nil {
		t.Errorf("expired job: %+v", r.Job)
	}
	// A job whose condition matches nothing completes at once.
	methodJob(t, s, "none")
	r, err = s.StartJob(ctx, "none", mustParse("deviceId = 'nobody'"), t0)
	if err != nil || r.Status != herd.JobCompleted || r.EndTime == nil || r.DeviceJobStatistics.DeviceCount != 0 {
		t.Errorf("empty job: %+v %v", r, err)
	}
	// A job that cannot run is failed before it starts.
	methodJob(t, s, "badsql")
	if err := s.FailJob(ctx, "badsql", "bad query", t0); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Job(ctx, "badsql"); r.Status != herd.JobFailed || r.FailureReason != "bad query" || r.DeviceJobStatistics.DeviceCount != 0 {
		t.Errorf("failed job: %+v", r.Job)
	}
	active, err := s.ActiveJobs(ctx)
	if err != nil || len(active) != 0 {
		t.Errorf("active jobs left: %d %v", len(active), err)
	}
}

func testPurge(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "p1", "p2")
	methodJob(t, s, "old")
	methodJob(t, s, "new")
	methodJob(t, s, "open")
	for _, id := range []string{"old", "new", "open"} {
		if _, err := s.StartJob(ctx, id, everyDevice, t0); err != nil {
			t.Fatal(err)
		}
	}
	s.ExpireJob(ctx, "old", herd.JobFailed, "x", herd.DeviceJobError{Code: "c"}, t0)
	s.ExpireJob(ctx, "new", herd.JobFailed, "x", herd.DeviceJobError{Code: "c"}, t0.Add(48*time.Hour))
	n, err := s.PurgeJobs(ctx, t0.Add(24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := s.Job(ctx, "old"); !herd.IsCode(err, herd.ErrJobNotFound) {
		t.Errorf("purged job still there: %v", err)
	}
	if djs, _ := s.DeviceJobs(ctx, "old"); len(djs) != 0 {
		t.Errorf("purged job's device records still there: %d", len(djs))
	}
	for _, id := range []string{"new", "open"} {
		if _, err := s.Job(ctx, id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

// testManyDistinctOutcomes records a batch in which every device answered
// differently, plus some alike.
func testManyDistinctOutcomes(t *testing.T, s JobStore) {
	ctx := context.Background()
	var ids []string
	for i := range 30 {
		ids = append(ids, fmt.Sprintf("o%02d", i))
	}
	create(t, s, ids...)
	methodJob(t, s, "many")
	if _, err := s.StartJob(ctx, "many", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimDevices(ctx, "many", ids[:25], t0); err != nil {
		t.Fatal(err)
	}
	var outs []job.Outcome
	for i, id := range ids {
		switch {
		case i < 20:
			outs = append(outs, job.Outcome{DeviceID: id, Status: herd.DeviceJobCompleted,
				Response: &herd.MethodResult{Status: 200 + i%3, Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}})
		case i < 25:
			outs = append(outs, job.Outcome{DeviceID: id, Status: herd.DeviceJobFailed,
				Error: &herd.DeviceJobError{Code: "GatewayTimeout", Description: fmt.Sprintf("slow %d", i)}})
		default:
			outs = append(outs, job.Outcome{DeviceID: id, Status: herd.DeviceJobFailed, FromPending: true,
				Error: &herd.DeviceJobError{Code: "DeviceNotOnline", Description: "off"}})
		}
	}
	if err := s.FinishDevices(ctx, "many", outs, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	checkStats(t, s, "many", herd.DeviceJobStatistics{DeviceCount: 30, SucceededCount: 20, FailedCount: 10})
	djs, _ := s.DeviceJobs(ctx, "many")
	for i, d := range djs {
		switch {
		case i < 20:
			r := d.Outcome.DeviceMethodResponse
			// A store may keep the payload as JSON rather than as the
			// bytes the device sent (PostgreSQL's jsonb): the same JSON.
			if d.Status != herd.DeviceJobCompleted || r.Status != 200+i%3 || canonical(t, r.Payload) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Errorf("%s: %+v %+v", d.DeviceID, d, r)
			}
		case i < 25:
			if d.Error == nil || d.Error.Description != fmt.Sprintf("slow %d", i) || d.Outcome != nil {
				t.Errorf("%s: %+v", d.DeviceID, d)
			}
		default:
			if d.Error == nil || d.Error.Code != "DeviceNotOnline" || d.StartTimeUTC.IsZero() {
				t.Errorf("%s: %+v", d.DeviceID, d)
			}
		}
	}
}

func testPauseResumeAbort(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "p1", "p2", "p3", "p4", "p5")
	// The herd options are stored and read back as written.
	r := newJob(t, "paced", herd.JobDeviceMethod, `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"reboot"}}`)
	r.Herd = &herd.JobOptions{
		Rollout: &herd.Rollout{MaxPerMinute: 600, Exponential: &herd.ExponentialRate{BaseRatePerMinute: 50, IncrementFactor: 2,
			RateIncreaseCriteria: herd.RateIncreaseCriteria{NumberOfSucceededDevices: 10}}},
		Abort: &herd.AbortPolicy{Criteria: []herd.AbortCriterion{{FailureType: herd.FailureAny, ThresholdPercentage: 40, MinExecutedDevices: 2}}},
	}
	if err := s.CreateJob(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Job(ctx, "paced")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := job.EncodeOptions(got.Herd), job.EncodeOptions(r.Herd); a != b || a == "" {
		t.Errorf("herd options read back as %s, want %s", a, b)
	}
	methodJob(t, s, "plain")
	if got, _ := s.Job(ctx, "plain"); got.Herd != nil {
		t.Errorf("a job without options reads back with %+v", got.Herd)
	}
	// Paused before it starts: resumed, it is queued again.
	if r, err := s.PauseJob(ctx, "plain", t0); err != nil || r.Status != herd.JobPaused || r.EndTime != nil {
		t.Fatalf("pause queued: %+v %v", r, err)
	}
	if active, _ := s.ActiveJobs(ctx); len(active) != 2 {
		t.Errorf("active jobs with a paused one: %d, want 2", len(active))
	}
	if r, err := s.StartJob(ctx, "plain", everyDevice, t0); err != nil || r.Status != herd.JobPaused || r.DeviceJobStatistics.DeviceCount != 0 {
		t.Errorf("a paused job started: %+v %v", r, err)
	}
	if r, err := s.ResumeJob(ctx, "plain", t0); err != nil || r.Status != herd.JobQueued {
		t.Fatalf("resume before start: %+v %v", r, err)
	}
	if r, err := s.ResumeJob(ctx, "plain", t0); err != nil || r.Status != herd.JobQueued {
		t.Errorf("resume of a queued job changed it: %+v %v", r, err)
	}
	// Paused while running: devices keep their states; cancel works.
	if _, err := s.StartJob(ctx, "plain", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	s.ClaimDevices(ctx, "plain", []string{"p1"}, t0)
	if r, err := s.PauseJob(ctx, "plain", t0); err != nil || r.Status != herd.JobPaused {
		t.Fatalf("pause running: %+v %v", r, err)
	}
	checkStats(t, s, "plain", herd.DeviceJobStatistics{DeviceCount: 5, RunningCount: 1, PendingCount: 4})
	// A paused job's devices are neither claimed nor patched.
	if got, err := s.ClaimDevices(ctx, "plain", []string{"p2"}, t0); !errors.Is(err, job.ErrNotRunning) || len(got) != 0 {
		t.Errorf("claim while paused: %v %v, want ErrNotRunning", got, err)
	}
	if _, err := s.ApplyTwinBatch(ctx, "plain", twin.Patch{Tags: twin.Change{Set: true, Value: map[string]any{"x": 1.0}}}, "", 10, t0); !errors.Is(err, job.ErrNotRunning) {
		t.Errorf("twin batch while paused: %v, want ErrNotRunning", err)
	}
	checkStats(t, s, "plain", herd.DeviceJobStatistics{DeviceCount: 5, RunningCount: 1, PendingCount: 4})
	if r, err := s.CancelJob(ctx, "plain", t0.Add(time.Second)); err != nil || r.Status != herd.JobCancelled || r.EndTime != nil {
		t.Fatalf("cancel paused: %+v %v", r, err)
	}
	checkStats(t, s, "plain", herd.DeviceJobStatistics{DeviceCount: 5, RunningCount: 1, FailedCount: 4})
	if r, err := s.PauseJob(ctx, "plain", t0); err != nil || r.Status != herd.JobCancelled {
		t.Errorf("pause of a cancelled job changed it: %+v %v", r, err)
	}
	// A paused job whose last device finishes completes; so does one
	// resumed with nothing left.
	if _, err := s.StartJob(ctx, "paced", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	s.ClaimDevices(ctx, "paced", []string{"p1", "p2", "p3", "p4"}, t0)
	ok := &herd.MethodResult{Status: 200, Payload: json.RawMessage("null")}
	err = s.FinishDevices(ctx, "paced", []job.Outcome{
		{DeviceID: "p1", Status: herd.DeviceJobCompleted, Response: ok},
		{DeviceID: "p2", Status: herd.DeviceJobCompleted, Response: &herd.MethodResult{Status: 500, Payload: json.RawMessage(`"no"`)}},
		{DeviceID: "p3", Status: herd.DeviceJobFailed, Error: &herd.DeviceJobError{Code: "GatewayTimeout", Description: "slow"}},
		{DeviceID: "p5", Status: herd.DeviceJobFailed, FromPending: true, Error: &herd.DeviceJobError{Code: "DeviceNotOnline", Description: "off"}},
	}, t0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.FailureCounts(ctx, "paced")
	if want := (job.FailureCounts{Executed: 4, Failed: 1, TimedOut: 1, NotOnline: 1}); err != nil || c != want {
		t.Errorf("failure counts = %+v %v, want %+v", c, err, want)
	}
	if c.Of(herd.FailureAny) != 3 {
		t.Errorf("Any = %d", c.Of(herd.FailureAny))
	}
	if _, err := s.PauseJob(ctx, "paced", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishDevices(ctx, "paced", []job.Outcome{{DeviceID: "p4", Status: herd.DeviceJobCompleted, Response: ok}}, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	r = checkStats(t, s, "paced", herd.DeviceJobStatistics{DeviceCount: 5, SucceededCount: 3, FailedCount: 2})
	if r.Status != herd.JobCompleted || r.EndTime == nil {
		t.Errorf("paused job after its last device: %+v", r.Job)
	}
	// Abort: pending devices are canceled, the running one finishes, then
	// the job ends failed with the reason.
	methodJob(t, s, "bad")
	if _, err := s.StartJob(ctx, "bad", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	s.ClaimDevices(ctx, "bad", []string{"p1"}, t0)
	r, err = s.AbortJob(ctx, "bad", "too many failures", t0.Add(time.Second))
	if err != nil || r.Status != herd.JobFailed || r.FailureReason != "too many failures" || r.EndTime != nil {
		t.Fatalf("abort: %+v %v", r, err)
	}
	checkStats(t, s, "bad", herd.DeviceJobStatistics{DeviceCount: 5, RunningCount: 1, FailedCount: 4})
	active, _ := s.ActiveJobs(ctx)
	if !slices.ContainsFunc(active, func(r *job.Record) bool { return r.JobID == "bad" }) {
		t.Errorf("an aborting job is not active")
	}
	if c, _ := s.FailureCounts(ctx, "bad"); c.Executed != 0 {
		t.Errorf("canceled devices counted as executed: %+v", c)
	}
	if err := s.FinishDevices(ctx, "bad", []job.Outcome{{DeviceID: "p1", Status: herd.DeviceJobCompleted, Response: ok}}, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	r = checkStats(t, s, "bad", herd.DeviceJobStatistics{DeviceCount: 5, SucceededCount: 1, FailedCount: 4})
	if r.Status != herd.JobFailed || r.EndTime == nil || r.FailureReason != "too many failures" {
		t.Errorf("aborted job after its last running device: %+v", r.Job)
	}
	if r, err := s.AbortJob(ctx, "bad", "again", t0.Add(time.Hour)); err != nil || r.FailureReason != "too many failures" {
		t.Errorf("aborting an ended job changed it: %+v %v", r, err)
	}
	// Waves: the wave moves on (never back), pausing the job if asked.
	methodJob(t, s, "waved")
	s.StartJob(ctx, "waved", everyDevice, t0)
	if r, err := s.AdvanceWave(ctx, "waved", 1, false, t0); err != nil || r.Wave != 1 || r.Status != herd.JobRunning {
		t.Errorf("advance: %+v %v", r, err)
	}
	if r, err := s.AdvanceWave(ctx, "waved", 2, true, t0); err != nil || r.Wave != 2 || r.Status != herd.JobPaused {
		t.Errorf("advance and pause: %+v %v", r, err)
	}
	if r, err := s.AdvanceWave(ctx, "waved", 1, false, t0); err != nil || r.Wave != 2 {
		t.Errorf("a wave moved back: %+v %v", r, err)
	}
	if r, _ := s.Job(ctx, "waved"); r.Wave != 2 || r.Status != herd.JobPaused {
		t.Errorf("read back: wave %d %s", r.Wave, r.Status)
	}
	// The deadline of a paused job fails it.
	methodJob(t, s, "sleepy")
	s.StartJob(ctx, "sleepy", everyDevice, t0)
	s.PauseJob(ctx, "sleepy", t0)
	if err := s.ExpireJob(ctx, "sleepy", herd.JobFailed, "too slow", herd.DeviceJobError{Code: job.ErrCodeDeadline, Description: "d"}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Job(ctx, "sleepy"); r.Status != herd.JobFailed || r.FailureReason != "too slow" {
		t.Errorf("expired paused job: %+v", r.Job)
	}
	for _, f := range []func() (*job.Record, error){
		func() (*job.Record, error) { return s.PauseJob(ctx, "nope", t0) },
		func() (*job.Record, error) { return s.ResumeJob(ctx, "nope", t0) },
		func() (*job.Record, error) { return s.AbortJob(ctx, "nope", "x", t0) },
	} {
		if _, err := f(); !herd.IsCode(err, herd.ErrJobNotFound) {
			t.Errorf("unknown job: %v, want JobNotFound", err)
		}
	}
}

// testRetries: a retry outcome puts a device back to pending with its
// error (from running or from pending), counts its attempt once, hides it
// from DueDevices until it is due, and shows in Retries; a job that is
// ending records the retry as the failure it is.
func testRetries(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "r1", "r2", "r3", "r4")
	methodJob(t, s, "rj")
	if _, err := s.StartJob(ctx, "rj", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimDevices(ctx, "rj", []string{"r1", "r2"}, t0); err != nil {
		t.Fatal(err)
	}
	later, muchLater := t0.Add(30*time.Second), t0.Add(time.Hour)
	notOnline := &herd.DeviceJobError{Code: "DeviceNotOnline", Description: "off"}
	err := s.FinishDevices(ctx, "rj", []job.Outcome{
		{DeviceID: "r1", Status: herd.DeviceJobFailed, Error: &herd.DeviceJobError{Code: "GatewayTimeout", Description: "slow"}, RetryAt: later},
		{DeviceID: "r2", Status: herd.DeviceJobCompleted, Response: &herd.MethodResult{Status: 200, Payload: json.RawMessage(`1`)}},
		{DeviceID: "r3", Status: herd.DeviceJobFailed, FromPending: true, Error: notOnline, RetryAt: muchLater},
	}, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	checkStats(t, s, "rj", herd.DeviceJobStatistics{DeviceCount: 4, SucceededCount: 1, PendingCount: 3})
	rs, err := s.Retries(ctx, "rj")
	if err != nil || rs.Retrying != 2 || !rs.Next.Equal(later) {
		t.Fatalf("retries: %+v %v", rs, err)
	}
	due := func(now time.Time) []job.DueDevice {
		t.Helper()
		d, err := s.DueDevices(ctx, "rj", "", 10, now, false)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := due(t0.Add(2 * time.Second)); !slices.Equal(d, []job.DueDevice{{ID: "r4"}}) {
		t.Errorf("due before any retry: %+v", d)
	}
	if d := due(later); !slices.Equal(d, []job.DueDevice{{ID: "r1", Attempts: 1}, {ID: "r4"}}) {
		t.Errorf("due at the first retry: %+v", d)
	}
	if d := due(muchLater); !slices.Equal(d, []job.DueDevice{{ID: "r1", Attempts: 1}, {ID: "r3", Attempts: 1}, {ID: "r4"}}) {
		t.Errorf("due at the last retry: %+v", d)
	}
	if d, err := s.DueDevices(ctx, "rj", "", 10, muchLater, true); err != nil || !slices.Equal(d, []job.DueDevice{{ID: "r1", Attempts: 1}, {ID: "r3", Attempts: 1}}) {
		t.Errorf("retries only: %+v %v", d, err)
	}
	djs, _ := s.DeviceJobs(ctx, "rj")
	if d := djs[0]; d.Status != herd.DeviceJobPending || d.Attempts != 1 || d.Error == nil || d.Error.Code != "GatewayTimeout" {
		t.Errorf("r1 waiting for a retry: %+v", d)
	}
	if d := djs[2]; d.Status != herd.DeviceJobPending || d.Attempts != 1 || d.Error == nil || d.Error.Code != "DeviceNotOnline" {
		t.Errorf("r3 waiting for a retry: %+v", d)
	}
	// The second attempt of r1 succeeds; r3 fails from pending again.
	if c, err := s.ClaimDevices(ctx, "rj", []string{"r1"}, later); err != nil || len(c) != 1 {
		t.Fatalf("claim r1 again: %v %v", c, err)
	}
	err = s.FinishDevices(ctx, "rj", []job.Outcome{
		{DeviceID: "r1", Status: herd.DeviceJobCompleted, Response: &herd.MethodResult{Status: 200, Payload: json.RawMessage(`2`)}},
		{DeviceID: "r3", Status: herd.DeviceJobFailed, FromPending: true, Error: notOnline, RetryAt: muchLater.Add(time.Hour)},
	}, muchLater)
	if err != nil {
		t.Fatal(err)
	}
	checkStats(t, s, "rj", herd.DeviceJobStatistics{DeviceCount: 4, SucceededCount: 2, PendingCount: 2})
	djs, _ = s.DeviceJobs(ctx, "rj")
	if d := djs[0]; d.Status != herd.DeviceJobCompleted || d.Attempts != 2 || d.Error != nil || d.Outcome == nil {
		t.Errorf("r1 after its retry: %+v", d)
	}
	if d := djs[2]; d.Attempts != 2 || d.Status != herd.DeviceJobPending {
		t.Errorf("r3 after two attempts: %+v", d)
	}
	// Cancelled: the devices waiting are canceled, and a retry that
	// arrives from a call in flight is recorded failed.
	if _, err := s.ClaimDevices(ctx, "rj", []string{"r4"}, muchLater); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CancelJob(ctx, "rj", muchLater); err != nil {
		t.Fatal(err)
	}
	err = s.FinishDevices(ctx, "rj", []job.Outcome{
		{DeviceID: "r4", Status: herd.DeviceJobFailed, Error: notOnline, RetryAt: muchLater.Add(time.Minute)},
	}, muchLater)
	if err != nil {
		t.Fatal(err)
	}
	r := checkStats(t, s, "rj", herd.DeviceJobStatistics{DeviceCount: 4, SucceededCount: 2, FailedCount: 2})
	if r.Status != herd.JobCancelled || r.EndTime == nil {
		t.Errorf("job after cancel: %s %v", r.Status, r.EndTime)
	}
	djs, _ = s.DeviceJobs(ctx, "rj")
	if d := djs[3]; d.Status != herd.DeviceJobFailed || d.Attempts != 1 {
		t.Errorf("r4 retried in a cancelled job: %+v", d)
	}
	if d := djs[2]; d.Status != herd.DeviceJobCanceled || d.Attempts != 2 {
		t.Errorf("r3 after cancel: %+v", d)
	}
	if rs, err := s.Retries(ctx, "rj"); err != nil || rs.Retrying != 0 || !rs.Next.IsZero() {
		t.Errorf("retries after cancel: %+v %v", rs, err)
	}
}

// setTag writes one tag of a device's twin.
func setTag(t *testing.T, s JobStore, id, name string, v any) {
	t.Helper()
	if _, _, err := s.UpdateTwin(context.Background(), id, func(_ *herd.Device, d *twin.Doc) error {
		_, err := d.Apply(twin.Patch{Tags: twin.Change{Set: true, Value: map[string]any{name: v}}}, false, t0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// A continuous job is not completed when its devices are done; AddDevices
// targets the devices that match it, each once, while it is running or
// paused; its deadline completes it.
func testContinuous(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "k1", "k2", "k3", "k4")
	setTag(t, s, "k1", "site", "x")
	cond := mustParse("tags.site = 'x'")
	body := `{"type":"scheduleDeviceMethod","queryCondition":"tags.site = 'x'","cloudToDeviceMethod":{"methodName":"m"},"herd":{"continuous":true}}`
	r := newJob(t, "cont", herd.JobDeviceMethod, body)
	if err := s.CreateJob(ctx, r); err != nil {
		t.Fatal(err)
	}
	// Not taking devices before it starts.
	if n, err := s.AddDevices(ctx, "cont", cond, nil, t0); err != nil || n != 0 {
		t.Errorf("added to a queued job: %d %v", n, err)
	}
	started, err := s.StartJob(ctx, "cont", cond, t0)
	if err != nil || started.Status != herd.JobRunning || started.DeviceJobStatistics.DeviceCount != 1 {
		t.Fatalf("start: %+v %v", started, err)
	}
	if _, err := s.ClaimDevices(ctx, "cont", []string{"k1"}, t0); err != nil {
		t.Fatal(err)
	}
	ok := func(id string) job.Outcome {
		return job.Outcome{DeviceID: id, Status: herd.DeviceJobCompleted, Response: &herd.MethodResult{Status: 200, Payload: json.RawMessage("1")}}
	}
	if err := s.FinishDevices(ctx, "cont", []job.Outcome{ok("k1")}, t0); err != nil {
		t.Fatal(err)
	}
	r = checkStats(t, s, "cont", herd.DeviceJobStatistics{DeviceCount: 1, SucceededCount: 1})
	if r.Status != herd.JobRunning || r.EndTime != nil {
		t.Errorf("continuous job ended with its devices: %+v", r.Job)
	}
	// k2 starts matching, k3 does not; k1 is not added twice.
	setTag(t, s, "k2", "site", "x")
	setTag(t, s, "k3", "site", "y")
	if n, err := s.AddDevices(ctx, "cont", cond, []string{"k1", "k2", "k3", "nobody"}, t0.Add(time.Second)); err != nil || n != 1 {
		t.Errorf("added %d (%v), want k2", n, err)
	}
	checkStats(t, s, "cont", herd.DeviceJobStatistics{DeviceCount: 2, SucceededCount: 1, PendingCount: 1})
	if n, err := s.AddDevices(ctx, "cont", cond, []string{"k2"}, t0.Add(time.Second)); err != nil || n != 0 {
		t.Errorf("k2 added twice: %d %v", n, err)
	}
	if ids, err := s.PendingDevices(ctx, "cont", "", 10); err != nil || !slices.Equal(ids, []string{"k2"}) {
		t.Errorf("pending %v %v", ids, err)
	}
	// Paused, it still takes devices (it starts them on resume); a rescan
	// (no ids) finds every device that matches.
	if _, err := s.PauseJob(ctx, "cont", t0); err != nil {
		t.Fatal(err)
	}
	setTag(t, s, "k3", "site", "x")
	setTag(t, s, "k4", "site", "x")
	if n, err := s.AddDevices(ctx, "cont", cond, nil, t0.Add(2*time.Second)); err != nil || n != 2 {
		t.Errorf("rescan added %d (%v), want k3 and k4", n, err)
	}
	if r, err := s.ResumeJob(ctx, "cont", t0); err != nil || r.Status != herd.JobRunning {
		t.Errorf("resume: %+v %v", r, err)
	}
	s.ClaimDevices(ctx, "cont", []string{"k2", "k3", "k4"}, t0)
	if err := s.FinishDevices(ctx, "cont", []job.Outcome{ok("k2"), ok("k3")}, t0); err != nil {
		t.Fatal(err)
	}
	// The deadline completes it; the device still running fails.
	if err := s.ExpireJob(ctx, "cont", herd.JobCompleted, "unused", herd.DeviceJobError{Code: job.ErrCodeDeadline, Description: "d"}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r = checkStats(t, s, "cont", herd.DeviceJobStatistics{DeviceCount: 4, SucceededCount: 3, FailedCount: 1})
	if r.Status != herd.JobCompleted || r.EndTime == nil || r.FailureReason != "" {
		t.Errorf("after its deadline: %+v", r.Job)
	}
	if n, err := s.AddDevices(ctx, "cont", cond, nil, t0.Add(2*time.Hour)); err != nil || n != 0 {
		t.Errorf("added to an ended job: %d %v", n, err)
	}
	// A continuous job that matches nothing runs; a cancel ends it at
	// once, and it takes no device after.
	r = newJob(t, "empty", herd.JobUpdateTwin, `{"type":"scheduleUpdateTwin","queryCondition":"tags.site = 'z'","updateTwin":{"etag":"*","tags":{"seen":true}},"herd":{"continuous":true}}`)
	if err := s.CreateJob(ctx, r); err != nil {
		t.Fatal(err)
	}
	zcond := mustParse("tags.site = 'z'")
	if r, err := s.StartJob(ctx, "empty", zcond, t0); err != nil || r.Status != herd.JobRunning || r.EndTime != nil {
		t.Errorf("empty continuous job: %+v %v", r, err)
	}
	// A twin job's batch that finds nothing pending leaves it running.
	if res, err := s.ApplyTwinBatch(ctx, "empty", twin.Patch{Tags: twin.Change{Set: true, Value: map[string]any{"seen": true}}}, "", 10, t0); err != nil || !res.Done {
		t.Errorf("empty batch: %+v %v", res, err)
	}
	if r, _ := s.Job(ctx, "empty"); r.Status != herd.JobRunning || r.EndTime != nil {
		t.Errorf("after an empty batch: %+v", r.Job)
	}
	if r, err := s.CancelJob(ctx, "empty", t0); err != nil || r.Status != herd.JobCancelled || r.EndTime == nil {
		t.Errorf("cancel: %+v %v", r, err)
	}
	setTag(t, s, "k1", "site", "z")
	if n, err := s.AddDevices(ctx, "empty", zcond, []string{"k1"}, t0); err != nil || n != 0 {
		t.Errorf("added to a cancelled job: %d %v", n, err)
	}
	// A job that is not continuous takes no device.
	methodJob(t, s, "plain")
	s.StartJob(ctx, "plain", mustParse("deviceId = 'k1'"), t0)
	if n, err := s.AddDevices(ctx, "plain", everyDevice, nil, t0); err != nil || n != 0 {
		t.Errorf("added to a job that is not continuous: %d %v", n, err)
	}
}

// EndedDevices finds the records one write ended: by ids, by range, all,
// after a cursor; never a record another write ended, nor a pending one.
func testEndedDevices(t *testing.T, s JobStore) {
	ctx := context.Background()
	create(t, s, "n1", "n2", "n3", "n4", "n5")
	methodJob(t, s, "ends")
	if _, err := s.StartJob(ctx, "ends", everyDevice, t0); err != nil {
		t.Fatal(err)
	}
	s.ClaimDevices(ctx, "ends", []string{"n1", "n2", "n3"}, t0)
	t1, t2 := t0.Add(time.Second), t0.Add(2*time.Second)
	done := func(id string) job.Outcome {
		return job.Outcome{DeviceID: id, Status: herd.DeviceJobCompleted, Response: &herd.MethodResult{Status: 200, Payload: json.RawMessage("1")}}
	}
	if err := s.FinishDevices(ctx, "ends", []job.Outcome{done("n1"), done("n2")}, t1); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishDevices(ctx, "ends", []job.Outcome{done("n3")}, t2); err != nil {
		t.Fatal(err)
	}
	ids := func(recs []herd.DeviceJob, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range recs {
			out = append(out, r.DeviceID+":"+string(r.Status))
		}
		return fmt.Sprint(out)
	}
	for _, c := range []struct {
		sel    job.EndedSelection
		cursor string
		limit  int
		want   string
	}{
		{job.EndedSelection{At: t1, IDs: []string{"n1", "n2", "n3", "n4"}}, "", 10, "[n1:completed n2:completed]"},
		{job.EndedSelection{At: t1, IDs: []string{"n1", "n2"}}, "n1", 10, "[n2:completed]"},
		{job.EndedSelection{At: t1}, "", 1, "[n1:completed]"},
		{job.EndedSelection{At: t2, After: "n1", Last: "n4"}, "", 10, "[n3:completed]"},
		{job.EndedSelection{At: t2, After: "n3"}, "", 10, "[]"},
	} {
		if got := ids(s.EndedDevices(ctx, "ends", c.sel, c.cursor, c.limit)); got != c.want {
			t.Errorf("EndedDevices(%+v, %q, %d) = %s, want %s", c.sel, c.cursor, c.limit, got, c.want)
		}
	}
	// A cancel ends the pending ones at its time.
	t3 := t0.Add(3 * time.Second)
	if _, err := s.CancelJob(ctx, "ends", t3); err != nil {
		t.Fatal(err)
	}
	if got := ids(s.EndedDevices(ctx, "ends", job.EndedSelection{At: t3}, "", 10)); got != "[n4:canceled n5:canceled]" {
		t.Errorf("after the cancel: %s", got)
	}
}
