package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/service"
)

// fleet creates n devices through the bulk API, tagged building = i % 5
// and name n<i>, with desired fw "1.2" on even devices.
func fleet(t *testing.T, h *hubtest.Hub, n int) {
	t.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 100 {
		var batch []herd.ImportDevice
		for i := start; i < min(n, start+100); i++ {
			d := herd.ImportDevice{ID: fmt.Sprintf("dev-%03d", i), ImportMode: herd.ImportCreate,
				Tags: map[string]any{"building": i % 5, "name": fmt.Sprintf("n%d", i)}}
			if i%2 == 0 {
				d.Properties = &herd.PatchProperties{Desired: map[string]any{"fw": "1.2"}}
			}
			batch = append(batch, d)
		}
		res, err := h.Service.BulkDevices(ctx, batch)
		if err != nil || !res.IsSuccessful {
			t.Fatalf("bulk create: %v %+v", err, res)
		}
	}
}

func collect(t *testing.T, c *service.Client, q string, opts ...service.QueryOption) []*service.QueryPage {
	t.Helper()
	var pages []*service.QueryPage
	for page, err := range c.Query(context.Background(), q, opts...) {
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		pages = append(pages, page)
		if len(pages) > 1000 {
			t.Fatalf("%s: paging does not end", q)
		}
	}
	return pages
}

func TestQueryPagingAndShapes(t *testing.T) {
	h := hubtest.Start(t)
	fleet(t, h, 250)
	ctx := context.Background()

	// SELECT *: twins exactly as GET /twins/{id}, pages of the asked size,
	// a continuation on every page but the last.
	pages := collect(t, h.Service, "SELECT * FROM devices WHERE tags.building = 3", service.WithPageSize(7))
	var ids []string
	for i, p := range pages {
		if p.ItemType != "Twin" {
			t.Fatalf("item type %q, want Twin", p.ItemType)
		}
		if len(p.Items) > 7 || (p.Continuation == "") != (i == len(pages)-1) {
			t.Fatalf("page %d: %d items, continuation %q", i, len(p.Items), p.Continuation)
		}
		twins, err := p.Twins()
		if err != nil {
			t.Fatal(err)
		}
		for j, tw := range twins {
			ids = append(ids, tw.DeviceID)
			got := strings.TrimSpace(string(p.Items[j]))
			want, err := h.Service.GetTwin(ctx, tw.DeviceID)
			if err != nil {
				t.Fatal(err)
			}
			if w := asJSON(want); got != w {
				t.Fatalf("query item differs from GET /twins/%s:\n%s\n%s", tw.DeviceID, got, w)
			}
			if strings.Contains(got, `"jobs"`) {
				t.Fatalf("twin has a jobs property: %s", got)
			}
		}
	}
	if len(ids) != 50 || ids[0] != "dev-003" || ids[49] != "dev-248" {
		t.Fatalf("%d twins: %v", len(ids), ids)
	}

	// Default and maximum page size: 100.
	for _, size := range []int{0, 1000} {
		pages = collect(t, h.Service, "SELECT * FROM devices", service.WithPageSize(size))
		if len(pages) != 3 || len(pages[0].Items) != 100 || len(pages[2].Items) != 50 {
			t.Errorf("page size %d: %d pages", size, len(pages))
		}
	}

	// TOP caps the total across pages.
	pages = collect(t, h.Service, "SELECT TOP 15 * FROM devices WHERE tags.building != 0", service.WithPageSize(10))
	if len(pages) != 2 || len(pages[0].Items) != 10 || len(pages[1].Items) != 5 || pages[1].Continuation != "" {
		t.Errorf("TOP 15 in pages of 10: %d pages", len(pages))
	}

	// Projections: Raw rows keyed by alias or last segment, canonical
	// casing for system fields, undefined values left out.
	pages = collect(t, h.Service, "SELECT DeviceId, tags.building AS b, properties.desired.fw FROM devices WHERE tags.name IN ['n1', 'n2']")
	rows, _ := pages[0].Rows()
	if pages[0].ItemType != "Raw" || asJSON(rows) != `[{"b":1,"deviceId":"dev-001"},{"b":2,"deviceId":"dev-002","fw":"1.2"}]` {
		t.Errorf("projection: %s %s", pages[0].ItemType, asJSON(rows))
	}

	// Aggregates, with and without GROUP BY, paged.
	pages = collect(t, h.Service, "SELECT tags.building, COUNT() AS n FROM devices GROUP BY tags.building", service.WithPageSize(2))
	var groups []map[string]any
	for _, p := range pages {
		r, _ := p.Rows()
		groups = append(groups, r...)
	}
	if asJSON(groups) != `[{"building":0,"n":50},{"building":1,"n":50},{"building":2,"n":50},{"building":3,"n":50},{"building":4,"n":50}]` || len(pages) != 3 {
		t.Errorf("GROUP BY in pages of 2: %d pages %s", len(pages), asJSON(groups))
	}
	pages = collect(t, h.Service, "SELECT COUNT(), MAX(tags.name) AS last FROM devices WHERE properties.desired.fw = '1.2'")
	if rows, _ := pages[0].Rows(); asJSON(rows) != `[{"$1":125,"last":"n98"}]` {
		t.Errorf("COUNT: %s", asJSON(rows))
	}

	// A job's queryCondition selects devices with the same language, and
	// its records are queryable FROM devices.jobs.
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "b2", "tags.building = 2 AND NOT IS_DEFINED(properties.desired.fw)",
		herd.TwinPatch{ETag: "*", Tags: map[string]any{"ring": 1}}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	if j, err := h.Service.WaitJob(ctx, "b2", nil); err != nil || j.Status != herd.JobCompleted || j.DeviceJobStatistics.DeviceCount != 25 {
		t.Fatalf("job: %v %+v", err, j)
	}
	pages = collect(t, h.Service, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'b2' AND devices.jobs.status = 'completed'", service.WithPageSize(10))
	var jobs []*herd.DeviceJob
	for _, p := range pages {
		if p.ItemType != "DeviceJob" {
			t.Fatalf("item type %q", p.ItemType)
		}
		js, err := p.DeviceJobs()
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, js...)
	}
	if len(jobs) != 25 || jobs[0].DeviceID != "dev-007" || jobs[0].JobType != herd.JobUpdateTwin {
		t.Errorf("device jobs: %d %+v", len(jobs), jobs[0])
	}
	pages = collect(t, h.Service, "SELECT deviceId FROM devices WHERE tags.ring = 1 AND tags.building = 2")
	if rows, _ := pages[0].Rows(); len(rows) != 25 {
		t.Errorf("the job patched %d twins", len(rows))
	}
}

func TestQueryWire(t *testing.T) {
	h := hubtest.Start(t)
	fleet(t, h, 12)
	r := newRaw(t, h)
	post := func(body string, header map[string]string) (*http.Response, []byte) {
		if header == nil {
			header = map[string]string{}
		}
		header["Content-Type"] = "application/json; charset=utf-8"
		return r.do(http.MethodPost, "/devices/query"+v, body, header)
	}

	resp, body := post(`{"query":"SELECT deviceId FROM devices"}`, map[string]string{"x-ms-max-item-count": "5"})
	if resp.StatusCode != 200 || resp.Header.Get("x-ms-item-type") != "Raw" || !strings.HasPrefix(string(body), "[{") {
		t.Fatalf("first page: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	token := resp.Header.Get("x-ms-continuation")
	if token == "" {
		t.Fatal("no continuation on the first of 3 pages")
	}
	var pages []string
	for range 2 {
		resp, body = post(`{"query":"SELECT deviceId FROM devices"}`, map[string]string{"x-ms-max-item-count": "5", "x-ms-continuation": token})
		pages = append(pages, string(body))
	}
	if pages[0] != pages[1] {
		t.Errorf("the same continuation gave different pages:\n%s\n%s", pages[0], pages[1])
	}
	resp, body = post(`{"query":"SELECT deviceId FROM devices"}`, map[string]string{"x-ms-max-item-count": "5", "x-ms-continuation": resp.Header.Get("x-ms-continuation")})
	if _, ok := resp.Header["X-Ms-Continuation"]; ok || string(body) != `[{"deviceId":"dev-010"},{"deviceId":"dev-011"}]` {
		t.Errorf("last page: continuation header %q present, body %s", resp.Header.Get("x-ms-continuation"), body)
	}
	resp, body = post(`{"query":"SELECT * FROM devices WHERE tags.building = 99"}`, nil)
	if resp.StatusCode != 200 || string(body) != "[]" || resp.Header.Get("x-ms-item-type") != "Twin" {
		t.Errorf("no results: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	if _, ok := resp.Header["X-Ms-Continuation"]; ok {
		t.Error("continuation header on an empty result")
	}

	for _, tc := range []struct {
		body, header, msg string
		status            int
		code              herd.ErrorCode
	}{
		{`{"query":"SELECT * FROM devices WHERE tags.a = = 1"}`, "", "line 1, column 38: expected an expression, found '='", 400, herd.ErrArgumentInvalid},
		{`{"query":"SELECT * FROM devices\nWHERE building = 1"}`, "", "line 2, column 7: unknown property building", 400, herd.ErrArgumentInvalid},
		{`{"query":"SELECT * FROM devices WHERE tags.a = '` + strings.Repeat("x", 8200) + `'"}`, "", "the limit is 8192", 412, herd.ErrPreconditionFailed},
		{`{"query":""}`, "", "the body must be", 400, herd.ErrArgumentNull},
		{`{}`, "", "the body must be", 400, herd.ErrArgumentNull},
		{`{"query":"SELECT * FROM devices"}`, "abc", "x-ms-max-item-count", 400, herd.ErrArgumentInvalid},
		{`{"query":"SELECT * FROM devices"}`, "token", "continuation token", 400, herd.ErrArgumentInvalid},
		{`{"query":`, "", "not valid JSON", 400, herd.ErrIotHubFormatError},
	} {
		header := map[string]string{}
		switch tc.header {
		case "abc":
			header["x-ms-max-item-count"] = "abc"
		case "token":
			header["x-ms-continuation"] = "bm90IGEgdG9rZW4"
		}
		resp, body := post(tc.body, header)
		expectError(t, resp, body, tc.status, tc.code)
		if !strings.Contains(string(body), tc.msg) {
			t.Errorf("%.60s: message %s, want %q", tc.body, body, tc.msg)
		}
	}

	// Rights (§2.6): ServiceConnect or either registry right.
	for policy, want := range map[string]int{"service": 200, "registryRead": 200, "registryReadWrite": 200, "device": 401} {
		resp, body := post(`{"query":"SELECT COUNT() AS n FROM devices"}`, map[string]string{"Authorization": r.token(policy)})
		if resp.StatusCode != want {
			t.Errorf("policy %s: %d %s, want %d", policy, resp.StatusCode, body, want)
		}
	}
	// GET /devices/query is still the device "query".
	resp, body = r.do(http.MethodGet, "/devices/query"+v, "", nil)
	expectError(t, resp, body, 404, herd.ErrDeviceNotFound)
}

func TestQueryErrorThroughSDK(t *testing.T) {
	h := hubtest.Start(t)
	for _, err := range h.Service.Query(context.Background(), "SELECT * FROM devices WHERE") {
		if !herd.IsCode(err, herd.ErrArgumentInvalid) || !strings.Contains(err.Error(), "line 1, column 28") {
			t.Errorf("error %v", err)
		}
		return
	}
	t.Error("no error")
}
