package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

func TestJobRequestsValidation(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	put := func(id, body string) (*http.Response, []byte) {
		return r.do(http.MethodPut, "/jobs/v2/"+id+"?api-version=2021-04-12", body, map[string]string{"Content-Type": "application/json; charset=utf-8"})
	}
	twinPatch := `"updateTwin":{"etag":"*","tags":{"a":1}}`
	for _, tc := range []struct {
		name, id, body string
		status         int
		code           herd.ErrorCode
	}{
		{"old type name", "j1", `{"type":"scheduleTwinUpdate","queryCondition":"*",` + twinPatch + `}`, 400, herd.ErrGenericBadRequest},
		{"old method type", "j1", `{"type":"scheduleDirectMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x"}}`, 400, herd.ErrGenericBadRequest},
		{"export type", "j1", `{"type":"export","queryCondition":"*"}`, 400, herd.ErrGenericBadRequest},
		{"no type", "j1", `{"queryCondition":"*",` + twinPatch + `}`, 400, herd.ErrArgumentNull},
		{"not JSON", "j1", `{"type":`, 400, herd.ErrIotHubFormatError},
		{"array body", "j1", `[1]`, 400, herd.ErrGenericBadRequest},
		{"empty body", "j1", ``, 400, herd.ErrArgumentNull},
		{"bad id", "bad_id!", `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"long id", strings.Repeat("a", 65), `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"id mismatch", "j1", `{"jobId":"j2","type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"no condition", "j1", `{"type":"scheduleUpdateTwin",` + twinPatch + `}`, 400, herd.ErrArgumentNull},
		{"condition too long", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"` + strings.Repeat("x", 8193) + `",` + twinPatch + `}`, 412, herd.ErrPreconditionFailed},
		{"etag not *", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"AAAAAAAAAAE=","tags":{"a":1}}}`, 400, herd.ErrArgumentInvalid},
		{"etag missing", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"tags":{"a":1}}}`, 400, herd.ErrArgumentInvalid},
		{"root desired", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","desired":{"a":1}}}`, 400, herd.ErrArgumentInvalid},
		{"reported", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","properties":{"reported":{"a":1}}}}`, 400, herd.ErrArgumentInvalid},
		{"nothing to update", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*"}}`, 400, herd.ErrArgumentInvalid},
		{"bad key", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a.b":1}}}`, 400, herd.ErrArgumentInvalid},
		{"tags too big", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{` + bigProps(9) + `}}}`, 400, herd.ErrArgumentInvalid},
		{"no updateTwin", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*"}`, 400, herd.ErrArgumentNull},
		{"both payloads", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `,"cloudToDeviceMethod":{"methodName":"x"}}`, 400, herd.ErrArgumentInvalid},
		{"no method", "j1", `{"type":"scheduleDeviceMethod","queryCondition":"*"}`, 400, herd.ErrArgumentNull},
		{"no method name", "j1", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"payload":1}}`, 400, herd.ErrArgumentNull},
		{"bad method name", "j1", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"a/b"}}`, 400, herd.ErrArgumentInvalid},
		{"response timeout", "j1", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x","responseTimeoutInSeconds":4}}`, 400, herd.ErrArgumentInvalid},
		{"connect timeout", "j1", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x","connectTimeoutInSeconds":301}}`, 400, herd.ErrArgumentInvalid},
		{"bad start", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","startTime":"tomorrow",` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"bad max", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","maxExecutionTimeInSeconds":0,` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"max not a number", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","maxExecutionTimeInSeconds":"x",` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"max as a string", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","maxExecutionTimeInSeconds":"10",` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"empty start", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","startTime":"",` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"timeout as a string", "j1", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x","responseTimeoutInSeconds":"10"}}`, 400, herd.ErrArgumentInvalid},
		{"connect timeout as a string", "j1", `{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"x","connectTimeoutInSeconds":"0"}}`, 400, herd.ErrArgumentInvalid},
		{"condition does not parse", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"SELECT * FROM devices",` + twinPatch + `}`, 400, herd.ErrArgumentInvalid},
		{"condition with a bad operator", "j1", `{"type":"scheduleDeviceMethod","queryCondition":"tags.a == 1","cloudToDeviceMethod":{"methodName":"x"}}`, 400, herd.ErrArgumentInvalid},
		{"arrays too deep", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":` + strings.Repeat("[", 10) + strings.Repeat("]", 10) + `}}}`, 400, herd.ErrArgumentInvalid},
		{"arrays past SQLite's depth", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","properties":{"desired":{"a":` + strings.Repeat("[", 1200) + strings.Repeat("]", 1200) + `}}}}`, 400, herd.ErrArgumentInvalid},
		{"herd not an object", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `,"herd":[]}`, 400, herd.ErrArgumentInvalid},
		{"herd abort bad type", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `,"herd":{"abort":{"criteria":[{"failureType":"Sad","thresholdPercentage":5}]}}}`, 400, herd.ErrArgumentInvalid},
		{"herd abort no threshold", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `,"herd":{"abort":{"criteria":[{"failureType":"Any"}]}}}`, 400, herd.ErrArgumentNull},
		{"herd retry not yet", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `,"herd":{"retry":{"criteria":[{"failureType":"DeviceNotOnline","maxAttempts":3}]}}}`, 400, herd.ErrArgumentInvalid},
		{"herd waves falling", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `,"herd":{"rollout":{"waves":[{"percent":50},{"percent":5}]}}}`, 400, herd.ErrArgumentInvalid},
		{"herd rollout zero", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*",` + twinPatch + `,"herd":{"rollout":{"maxPerMinute":0}}}`, 400, herd.ErrArgumentInvalid},
		{"invalid UTF-8", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":"` + "\xff" + `"}}}`, 400, herd.ErrIotHubFormatError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := put(tc.id, tc.body)
			expectError(t, resp, body, tc.status, tc.code)
		})
	}
	// Nothing was written.
	if jobs, err := h.Service.ListJobs(context.Background(), service.JobFilter{}); err != nil || len(jobs) != 0 {
		t.Errorf("bad requests stored %d jobs (%v)", len(jobs), err)
	}
}

func TestJobWire(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	ctx := context.Background()
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "d1"}); err != nil {
		t.Fatal(err)
	}
	// What the Node SDK's promise form sends without a start time:
	// startTime null, no maxExecutionTimeInSeconds, a numeric jobId.
	start := time.Now().Add(time.Hour).UTC()
	resp, body := r.do(http.MethodPut, "/jobs/v2/42?api-version=2021-04-12",
		`{"jobId":42,"type":"scheduleUpdateTwin","queryCondition":"*","startTime":"`+start.Format("2006-01-02T15:04:05.000Z")+`",
		"updateTwin":{"deviceId":null,"etag":"*","tags":{},"properties":{"desired":{},"reported":{}}}}`,
		map[string]string{"Content-Type": "application/json; charset=utf-8"})
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	var j map[string]any
	json.Unmarshal(body, &j)
	if j["jobId"] != "42" || j["status"] != "queued" || j["maxExecutionTimeInSeconds"] != 3600.0 || j["type"] != "scheduleUpdateTwin" {
		t.Errorf("PUT reply: %s", body)
	}
	resp, body = r.do(http.MethodPut, "/jobs/v2/42?api-version=2021-04-12", `{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}}}`, nil)
	expectError(t, resp, body, 409, herd.ErrJobAlreadyExists)

	resp, body = r.do(http.MethodGet, "/jobs/v2/nope?api-version=2021-04-12", "", nil)
	expectError(t, resp, body, 404, herd.ErrJobNotFound)
	resp, body = r.do(http.MethodPost, "/jobs/v2/nope/cancel?api-version=2021-04-12", "", map[string]string{"Content-Length": "0"})
	expectError(t, resp, body, 404, herd.ErrJobNotFound)

	// Pause and resume (Herd's), no body; then cancel: Content-Length 0,
	// no Content-Type.
	resp, body = r.do(http.MethodPost, "/jobs/v2/nope/pause?api-version=2021-04-12", "", nil)
	expectError(t, resp, body, 404, herd.ErrJobNotFound)
	resp, body = r.do(http.MethodPost, "/jobs/v2/42/pause?api-version=2021-04-12", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"paused"`) {
		t.Fatalf("pause: %d %s", resp.StatusCode, body)
	}
	resp, body = r.do(http.MethodGet, "/jobs/v2/query?api-version=2021-04-12&jobStatus=Paused", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"jobId":"42"`) {
		t.Errorf("list paused: %d %s", resp.StatusCode, body)
	}
	resp, body = r.do(http.MethodPost, "/jobs/v2/42/resume?api-version=2021-04-12", "", nil)
	if resp.StatusCode != 200 || strings.Contains(string(body), `"status":"paused"`) {
		t.Fatalf("resume: %d %s", resp.StatusCode, body)
	}
	resp, body = r.do(http.MethodPost, "/jobs/v2/42/pause?api-version=2021-04-12", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"paused"`) {
		t.Fatalf("pause again: %d %s", resp.StatusCode, body)
	}
	resp, body = r.do(http.MethodPost, "/jobs/v2/42/cancel?api-version=2021-04-12", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"cancelled"`) {
		t.Fatalf("cancel: %d %s", resp.StatusCode, body)
	}
	resp, body = r.do(http.MethodGet, "/jobs/v2/42?api-version=2021-04-12", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"deviceJobStatistics":{"deviceCount":0,"failedCount":0,"succeededCount":0,"runningCount":0,"pendingCount":0}`) ||
		!strings.Contains(string(body), `"endTime":"`) {
		t.Errorf("GET: %d %s", resp.StatusCode, body)
	}

	// Listing: filters are case-insensitive (C# sends ScheduleDeviceMethod,
	// Completed); pages follow x-ms-max-item-count / x-ms-continuation.
	for i := range 5 {
		if _, err := h.Service.ScheduleTwinUpdate(ctx, fmt.Sprintf("t%d", i), "*", herd.TwinPatch{Tags: map[string]any{"i": i}}, service.JobOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := h.Service.WaitJob(ctx, fmt.Sprintf("t%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	token := ""
	for pages := 0; ; pages++ {
		hdr := map[string]string{"x-ms-max-item-count": "2"}
		if token != "" {
			hdr["x-ms-continuation"] = token
		}
		resp, body = r.do(http.MethodGet, "/jobs/v2/query?api-version=2021-04-12&jobType=SCHEDULEUPDATETWIN", "", hdr)
		if resp.StatusCode != 200 || resp.Header.Get("x-ms-item-type") != "JobResponse" {
			t.Fatalf("list: %d %v %s", resp.StatusCode, resp.Header, body)
		}
		var page []herd.Job
		if err := json.Unmarshal(body, &page); err != nil || len(page) > 2 {
			t.Fatalf("page: %s %v", body, err)
		}
		for _, j := range page {
			ids = append(ids, j.JobID)
		}
		if _, more := resp.Header["X-Ms-Continuation"]; !more || pages > 5 {
			break
		}
		token = resp.Header.Get("x-ms-continuation")
	}
	if len(ids) != 6 {
		t.Errorf("listed %v, want 6 twin jobs", ids)
	}
	resp, body = r.do(http.MethodGet, "/jobs/v2/query?api-version=2021-04-12&jobStatus=Completed&jobType=ScheduleUpdateTwin", "", nil)
	var done []herd.Job
	json.Unmarshal(body, &done)
	if resp.StatusCode != 200 || len(done) != 5 || resp.Header.Get("x-ms-continuation") != "" {
		t.Errorf("completed: %d jobs, continuation %q", len(done), resp.Header.Get("x-ms-continuation"))
	}
	resp, body = r.do(http.MethodGet, "/jobs/v2/query?api-version=2021-04-12&jobType=scheduleDeviceMethod", "", nil)
	if resp.StatusCode != 200 || string(body) != "[]" {
		t.Errorf("method jobs: %s", body)
	}
	resp, body = r.do(http.MethodGet, "/jobs/v2/query/?api-version=2021-04-12&jobStatus=cancelled", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"jobId":"42"`) {
		t.Errorf("cancelled (trailing slash): %d %s", resp.StatusCode, body)
	}
	resp, body = r.do(http.MethodGet, "/jobs/v2/query?api-version=2021-04-12", "", map[string]string{"x-ms-continuation": "nonsense"})
	expectError(t, resp, body, 400, herd.ErrArgumentInvalid)
}

func TestTwinJobThroughSDK(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	j, err := h.Service.ScheduleTwinUpdate(ctx, "fw-rollout", "*", herd.TwinPatch{
		Tags:       map[string]any{"ring": "canary"},
		Properties: &herd.PatchProperties{Desired: map[string]any{"fw": "2.0"}},
	}, service.JobOptions{MaxExecutionTime: 10 * time.Minute})
	if err != nil || j.Status != herd.JobQueued || j.MaxExecutionTimeInSeconds != 600 {
		t.Fatalf("schedule: %+v %v", j, err)
	}
	var seen []herd.JobStatus
	j, err = h.Service.WaitJob(ctx, "fw-rollout", func(j *herd.Job) { seen = append(seen, j.Status) })
	if err != nil || j.Status != herd.JobCompleted || j.DeviceJobStatistics.SucceededCount != 3 || j.EndTime == nil || len(seen) == 0 {
		t.Fatalf("wait: %+v %v %v", j, err, seen)
	}
	tw, err := h.Service.GetTwin(ctx, "b")
	if err != nil || tw.Tags["ring"] != "canary" || tw.Properties.Desired["fw"] != "2.0" {
		t.Errorf("twin: %+v %v", tw, err)
	}
	if _, err := h.Service.GetJob(ctx, "nope"); !herd.IsCode(err, herd.ErrJobNotFound) {
		t.Errorf("GetJob unknown: %v", err)
	}
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "fw-rollout", "*", herd.TwinPatch{Tags: map[string]any{"x": 1}}, service.JobOptions{}); !herd.IsCode(err, herd.ErrJobAlreadyExists) {
		t.Errorf("duplicate: %v", err)
	}
	jobs, err := h.Service.ListJobs(ctx, service.JobFilter{Status: herd.JobCompleted})
	if err != nil || len(jobs) != 1 {
		t.Errorf("list: %d %v", len(jobs), err)
	}
	// The device records, through the query language.
	var records []*herd.DeviceJob
	for page, err := range h.Service.Query(ctx, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'fw-rollout'", service.WithPageSize(2)) {
		if err != nil {
			t.Fatal(err)
		}
		if page.ItemType != service.ItemDeviceJob {
			t.Errorf("item type %q", page.ItemType)
		}
		djs, err := page.DeviceJobs()
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, djs...)
	}
	if len(records) != 3 {
		t.Fatalf("%d device records, want 3", len(records))
	}
	for _, d := range records {
		if d.JobID != "fw-rollout" || d.JobType != herd.JobUpdateTwin || d.Status != herd.DeviceJobCompleted ||
			d.StartTimeUTC.IsZero() || d.EndTimeUTC.IsZero() || d.CreatedDateTimeUTC.IsZero() || d.Error != nil {
			t.Errorf("record: %+v", d)
		}
	}
}

// TestJobRights checks every built-in policy against every job endpoint: a
// job needs the rights of what it does (§2.6) — a twin job RegistryWrite or
// ServiceConnect, a method job ServiceConnect, cancel the same as create —
// while reading jobs takes any service right.
func TestJobRights(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	twinJob := `{"type":"scheduleUpdateTwin","queryCondition":"*","startTime":"` + later + `","updateTwin":{"etag":"*","properties":{"desired":{"x":1}}}}`
	methodJob := `{"type":"scheduleDeviceMethod","queryCondition":"*","startTime":"` + later + `","cloudToDeviceMethod":{"methodName":"unlock"}}`
	json := map[string]string{"Content-Type": "application/json; charset=utf-8"}
	// Jobs to cancel, created by the owner.
	for _, j := range []struct{ id, body string }{{"ctwin", twinJob}, {"cmethod", methodJob}} {
		if resp, body := r.do(http.MethodPut, "/jobs/v2/"+j.id+v, j.body, json); resp.StatusCode != 200 {
			t.Fatalf("create %s: %d %s", j.id, resp.StatusCode, body)
		}
	}
	type call struct{ name, method, path, body string }
	calls := []call{
		{"put twin job", http.MethodPut, "/jobs/v2/%s", twinJob},
		{"put method job", http.MethodPut, "/jobs/v2/%s", methodJob},
		{"pause twin job", http.MethodPost, "/jobs/v2/ctwin/pause", ""},
		{"resume method job", http.MethodPost, "/jobs/v2/cmethod/resume", ""},
		{"cancel twin job", http.MethodPost, "/jobs/v2/ctwin/cancel", ""},
		{"cancel method job", http.MethodPost, "/jobs/v2/cmethod/cancel", ""},
		{"get job", http.MethodGet, "/jobs/v2/ctwin", ""},
		{"list jobs", http.MethodGet, "/jobs/v2/query", ""},
	}
	allowed := map[string][]bool{ // in the order of calls
		"iothubowner":       {true, true, true, true, true, true, true, true},
		"service":           {true, true, true, true, true, true, true, true},
		"registryReadWrite": {true, false, true, false, true, false, true, true},
		"registryRead":      {false, false, false, false, false, false, true, true},
		"device":            {false, false, false, false, false, false, false, false},
	}
	// Refused calls come first, so that the cancels they try find the jobs
	// still queued.
	for _, pass := range []bool{false, true} {
		for policy, want := range allowed {
			for i, c := range calls {
				if want[i] != pass {
					continue
				}
				t.Run(policy+"/"+c.name, func(t *testing.T) {
					path := c.path
					if strings.Contains(path, "%s") {
						path = fmt.Sprintf(path, strings.ToLower(policy)+"-"+strings.ReplaceAll(c.name, " ", "-"))
					}
					hdr := map[string]string{"Authorization": r.token(policy)}
					if c.body != "" {
						hdr["Content-Type"] = json["Content-Type"]
					}
					resp, body := r.do(c.method, path+v, c.body, hdr)
					if !pass {
						expectError(t, resp, body, 401, herd.ErrUnauthorized)
						return
					}
					if resp.StatusCode != 200 {
						t.Errorf("%d %s", resp.StatusCode, body)
					}
				})
			}
		}
		if pass {
			continue
		}
		// Nothing the refused calls tried happened.
		jobs, err := h.Service.ListJobs(context.Background(), service.JobFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) != 2 {
			t.Errorf("refused calls stored jobs: %d jobs, want the 2 created by the owner", len(jobs))
		}
		for _, j := range jobs {
			if j.Status == herd.JobCancelled {
				t.Errorf("job %s was cancelled by a refused call", j.JobID)
			}
		}
	}
}

func TestJobHerdOptions(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	// Herd's abort criteria are stored and echoed, with the default
	// minExecutedDevices filled in.
	resp, body := r.do(http.MethodPut, "/jobs/v2/guarded?api-version=2021-04-12", `{"type":"scheduleUpdateTwin","queryCondition":"*",
		"startTime":"2099-01-01T00:00:00Z","updateTwin":{"etag":"*","tags":{"a":1}},
		"herd":{"abort":{"criteria":[{"failureType":"any","thresholdPercentage":12.5}]}}}`, nil)
	want := `"herd":{"abort":{"criteria":[{"failureType":"Any","thresholdPercentage":12.5,"minExecutedDevices":1}]}}`
	if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
		t.Errorf("PUT with herd.abort: %d %s", resp.StatusCode, body)
	}
	if resp, body = r.do(http.MethodGet, "/jobs/v2/guarded?api-version=2021-04-12", "", nil); resp.StatusCode != 200 || !strings.Contains(string(body), want) {
		t.Errorf("GET with herd.abort: %d %s", resp.StatusCode, body)
	}

}
