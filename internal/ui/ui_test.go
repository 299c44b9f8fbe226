package ui_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/ui"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// browser is an HTTP client that keeps cookies and does not follow
// redirects, as the tests look at them.
type browser struct {
	t    *testing.T
	h    *hubtest.Hub
	http *http.Client
	csrf string
}

func newBrowser(t *testing.T, h *hubtest.Hub) *browser {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, h: h, http: &http.Client{
		Jar:           jar,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// page is one answer.
type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.http.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := page{resp.StatusCode, resp.Header, string(body)}
	if m := csrfField.FindStringSubmatch(p.body); m != nil {
		b.csrf = html.UnescapeString(m[1])
	}
	checkPage(b.t, req.URL.Path, p)
	return p
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) get(path string, header ...string) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.h.URL+path, nil)
	req.Header.Set("Accept", "text/html")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(req)
}

// post sends a form as a browser on the dashboard's page does
// (Sec-Fetch-Site: same-origin), with the session's CSRF token unless the
// form has a csrf value already; header pairs override.
func (b *browser) post(path string, form url.Values, header ...string) page {
	b.t.Helper()
	if _, ok := form["csrf"]; !ok && b.csrf != "" {
		form.Set("csrf", b.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, b.h.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", b.h.URL)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	return b.do(req)
}

// checkPage checks what every dashboard page must be: the strict CSP, and
// no inline script, style or event handler that it would block.
func checkPage(t *testing.T, path string, p page) {
	t.Helper()
	if !strings.HasPrefix(path, "/ui/") {
		return
	}
	if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") ||
		strings.Contains(csp, "unsafe-inline") {
		t.Errorf("%s: Content-Security-Policy %q", path, csp)
	}
	if p.header.Get("X-Content-Type-Options") != "nosniff" || p.header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("%s: security headers %v", path, p.header)
	}
	for _, bad := range []*regexp.Regexp{inlineScript, inlineStyle, handlerAttr, externalRef} {
		if m := bad.FindString(p.body); m != "" {
			t.Errorf("%s: the page has %q, which the CSP forbids or which loads from elsewhere", path, m)
		}
	}
}

var (
	inlineScript = regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]|<script>`)
	inlineStyle  = regexp.MustCompile(`<style|\sstyle=`)
	handlerAttr  = regexp.MustCompile(`\son[a-z]+=`)
	externalRef  = regexp.MustCompile(`(?:src|href)="(?:https?:)?//`)
)

func (b *browser) signIn(policy string) page {
	b.t.Helper()
	cs, err := b.h.Hub.ConnectionString(policy)
	if err != nil {
		b.t.Fatal(err)
	}
	p := b.post("/ui/login", url.Values{"connectionString": {cs}})
	if p.status != http.StatusSeeOther {
		b.t.Fatalf("sign in as %s: %d %s", policy, p.status, p.body)
	}
	b.get("/ui/") // for the CSRF token
	return p
}

func (b *browser) sessionCookie() *http.Cookie {
	u, _ := url.Parse(b.h.URL)
	for _, c := range b.http.Jar.Cookies(u) {
		if c.Name == ui.CookieName {
			return c
		}
	}
	return nil
}

func createDevices(t *testing.T, h *hubtest.Hub, tags map[string]any, ids ...string) {
	t.Helper()
	ds := make([]herd.ImportDevice, len(ids))
	for i, id := range ids {
		ds[i] = herd.ImportDevice{ID: id, ImportMode: herd.ImportCreate, Tags: tags}
	}
	for i := 0; i < len(ds); i += 100 {
		res, err := h.Service.BulkDevices(context.Background(), ds[i:min(i+100, len(ds))])
		if err != nil || !res.IsSuccessful {
			t.Fatalf("create devices: %v %+v", err, res)
		}
	}
}

func TestSignInAndOut(t *testing.T) {
	h := hubtest.Start(t)
	b := newBrowser(t, h)

	p := b.get("/ui/devices?q=x")
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/login?next=%2Fui%2Fdevices%3Fq%3Dx" {
		t.Fatalf("signed out: %d to %q", p.status, p.header.Get("Location"))
	}
	if p := b.get("/ui/login"); p.status != 200 || !strings.Contains(p.body, `<label for="cs">Connection string</label>`) {
		t.Fatalf("sign-in page: %d", p.status)
	}

	owner, _ := h.Hub.ConnectionString("iothubowner")
	device, _ := h.Hub.ConnectionString("device")
	wrongKey := regexp.MustCompile(`SharedAccessKey=[^;]+`).ReplaceAllString(owner, "SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	otherHub := strings.Replace(owner, "HostName=localhost", "HostName=other.example", 1)
	for _, tc := range []struct{ name, cs, says string }{
		{"empty", "", "Paste a service connection string"},
		{"not a connection string", "hello", "not a connection string"},
		{"device string", "HostName=localhost;DeviceId=d1;SharedAccessKey=AAAA", "device connection string"},
		{"wrong key", wrongKey, "signature does not match"},
		{"other hub", otherHub, "not for this hub"},
		{"device policy", device, "needs RegistryRead or RegistryWrite or ServiceConnect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := b.post("/ui/login", url.Values{"connectionString": {tc.cs}})
			if p.status != http.StatusUnauthorized || !strings.Contains(html.UnescapeString(p.body), tc.says) {
				t.Errorf("%d, want 401 saying %q: %s", p.status, tc.says, p.body)
			}
			if b.sessionCookie() != nil {
				t.Error("a refused sign-in set a session cookie")
			}
		})
	}

	p = b.post("/ui/login", url.Values{"connectionString": {owner}, "next": {"/ui/devices?q=tags.a%20%3D%201"}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/devices?q=tags.a%20%3D%201" {
		t.Fatalf("sign in: %d to %q", p.status, p.header.Get("Location"))
	}
	set := p.header.Get("Set-Cookie")
	for _, want := range []string{ui.CookieName + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(set, want) {
			t.Errorf("Set-Cookie %q lacks %s", set, want)
		}
	}
	key := regexp.MustCompile(`SharedAccessKey=(.+)$`).FindStringSubmatch(owner)[1]
	if ck := b.sessionCookie(); ck == nil || len(ck.Value) != 43 || strings.Contains(set, key) || strings.Contains(set, url.QueryEscape(key)) {
		t.Errorf("the cookie is not an opaque 256-bit id: %q", set)
	}
	home := b.get("/ui/")
	if home.status != 200 || !strings.Contains(home.body, `data-testid="policy">iothubowner<`) || !strings.Contains(home.body, "Sign out") {
		t.Fatalf("overview: %d", home.status)
	}
	if strings.Contains(home.body, key) {
		t.Error("the page shows the policy's key")
	}

	// An open redirect is not offered.
	for _, next := range []string{"https://evil.example/", "//evil.example/ui/", "/devices", `/\evil.example`} {
		p := b.post("/ui/login", url.Values{"connectionString": {owner}, "next": {next}})
		if loc := p.header.Get("Location"); loc != "/ui/" {
			t.Errorf("next=%q sends to %q", next, loc)
		}
	}

	b.get("/ui/") // the CSRF token of the last session
	old := b.sessionCookie()
	if p := b.post("/ui/logout", url.Values{}); p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/login" {
		t.Fatalf("sign out: %d %q", p.status, p.header.Get("Location"))
	}
	if b.sessionCookie() != nil {
		t.Error("sign-out left the cookie")
	}
	// The session is gone on the server: the old cookie no longer works.
	replay := newBrowser(t, h)
	u, _ := url.Parse(h.URL)
	replay.http.Jar.SetCookies(u, []*http.Cookie{old})
	if p := replay.get("/ui/"); p.status != http.StatusSeeOther {
		t.Errorf("a signed-out session still serves pages: %d", p.status)
	}
}

func TestCSRFAndCrossSiteRefused(t *testing.T) {
	h := hubtest.Start(t)
	createDevices(t, h, nil, "d1")
	b := newBrowser(t, h)
	b.signIn("iothubowner")
	disable := url.Values{"status": {"disabled"}}
	for _, tc := range []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no token", url.Values{"status": {"disabled"}, "csrf": {""}}, nil},
		{"wrong token", url.Values{"status": {"disabled"}, "csrf": {"x" + b.csrf}}, nil},
		{"cross-site fetch", disable, []string{"Sec-Fetch-Site", "cross-site"}},
		{"same-site fetch", disable, []string{"Sec-Fetch-Site", "same-site"}},
		{"foreign origin", disable, []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{}
			for k, v := range tc.form {
				form[k] = v
			}
			if p := b.post("/ui/devices/d1/status", form, tc.header...); p.status != http.StatusForbidden {
				t.Errorf("%d, want 403", p.status)
			}
		})
	}
	// A cross-site sign-in is refused too (login CSRF).
	cs, _ := h.Hub.ConnectionString("iothubowner")
	if p := newBrowser(t, h).post("/ui/login", url.Values{"connectionString": {cs}}, "Sec-Fetch-Site", "cross-site"); p.status != http.StatusForbidden {
		t.Errorf("cross-site sign-in: %d", p.status)
	}
	d, err := h.Service.GetDevice(context.Background(), "d1")
	if err != nil || d.Status != herd.DeviceEnabled {
		t.Fatalf("a refused request changed the device: %v %v", d.Status, err)
	}
	if p := b.post("/ui/devices/d1/status", disable); p.status != http.StatusSeeOther {
		t.Fatalf("disable: %d %s", p.status, p.body)
	}
	if d, _ := h.Service.GetDevice(context.Background(), "d1"); d.Status != herd.DeviceDisabled {
		t.Errorf("status %s after disabling", d.Status)
	}
	if p := b.get("/ui/devices/d1"); !strings.Contains(p.body, "Device disabled.") || !strings.Contains(p.body, `data-testid="device-status">disabled<`) {
		t.Errorf("device page after disabling: %s", p.body)
	}
}

func TestReadOnlyPolicySeesAndDoesNoWrites(t *testing.T) {
	h := hubtest.Start(t)
	createDevices(t, h, map[string]any{"building": 43}, "d1", "d2")
	ctx := context.Background()
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "later", "*", herd.TwinPatch{Tags: map[string]any{"x": 1}},
		service.JobOptions{StartTime: timeIn(3600)}); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, h)
	b.signIn("registryRead")
	pages := map[string][]string{
		"/ui/devices":    {"Bulk action", "Preview job", "/ui/jobs/preview"},
		"/ui/devices/d1": {"Disable", "Regenerate", "Save twin", "Invoke", "/twin\"", "/method\"", "Live telemetry"},
		"/ui/jobs":       {"New job"},
		"/ui/jobs/later": {"Cancel job", "Pause job"},
		"/ui/":           {"Monitor", "schedule a new one"},
	}
	for path, absent := range pages {
		p := b.get(path)
		if p.status != 200 {
			t.Errorf("%s: %d", path, p.status)
			continue
		}
		for _, a := range absent {
			if strings.Contains(p.body, a) {
				t.Errorf("%s shows %q to a registryRead policy", path, a)
			}
		}
	}
	if p := b.get("/ui/devices/d1"); !strings.Contains(p.body, `{&#34;building&#34;:43}`) && !strings.Contains(p.body, "&#34;building&#34;: 43") {
		t.Errorf("the twin is not shown to registryRead: %s", p.body)
	}
	// The device's modules are listed, without their keys.
	if p := b.get("/ui/devices/d2"); !strings.Contains(p.body, "This device has no modules") {
		t.Errorf("a device without modules: %s", p.body)
	}
	m, err := h.Service.CreateModule(ctx, herd.Module{DeviceID: "d1", ModuleID: "cam", ManagedBy: "IotEdge"})
	if err != nil {
		t.Fatal(err)
	}
	if p := b.get("/ui/devices/d1"); !strings.Contains(p.body, `data-testid="modules"`) || !strings.Contains(p.body, `/ui/devices/d1/modules/cam">cam</a></td><td>IotEdge</td>`) ||
		strings.Contains(p.body, m.Authentication.SymmetricKey.PrimaryKey) {
		t.Errorf("the device's modules: %s", p.body)
	}
	// The module's page: identity and twin, no method form for registryRead.
	if _, err := h.Service.UpdateModuleTwin(ctx, "d1", "cam", herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"fps": 25}}}, "*"); err != nil {
		t.Fatal(err)
	}
	p := b.get("/ui/devices/d1/modules/cam")
	if p.status != 200 || !strings.Contains(p.body, "Module twin") || !strings.Contains(p.body, "IotEdge") || !strings.Contains(p.body, "<code>fps</code>") ||
		strings.Contains(p.body, "Invoke") || strings.Contains(p.body, m.Authentication.SymmetricKey.PrimaryKey) {
		t.Errorf("the module page: %d %s", p.status, p.body)
	}
	if p := b.get("/ui/devices/d1/modules/nope"); p.status != 404 {
		t.Errorf("an unknown module's page: %d", p.status)
	}
	// Forged forms, with a valid CSRF token, are refused by the server.
	for path, form := range map[string]url.Values{
		"/ui/devices/d1/status":     {"status": {"disabled"}},
		"/ui/devices/d1/regenerate": {"key": {"both"}},
		"/ui/devices/d1/twin":       {"tags": {`{"hacked":1}`}, "desired": {"{}"}, "etag": {"*"}},
		"/ui/devices/d1/method":     {"methodName": {"reboot"}},
		"/ui/jobs/preview":          {"type": {"scheduleUpdateTwin"}, "condition": {"*"}, "tags": {`{"hacked":1}`}},
		"/ui/jobs":                  {"jobId": {"forged"}, "body": {`{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":1}}}`}},
		"/ui/jobs/later/cancel":     {},
		"/ui/jobs/later/pause":      {},
		"/ui/jobs/later/resume":     {},
	} {
		if p := b.post(path, form); p.status != http.StatusForbidden {
			t.Errorf("POST %s as registryRead: %d, want 403", path, p.status)
		}
	}
	for _, path := range []string{"/ui/monitor", "/ui/devices/d1/telemetry", "/ui/jobs/new"} {
		if p := b.get(path); p.status != http.StatusForbidden {
			t.Errorf("GET %s as registryRead: %d, want 403", path, p.status)
		}
	}
	d, _ := h.Service.GetDevice(ctx, "d1")
	tw, _ := h.Service.GetTwin(ctx, "d1")
	j, _ := h.Service.GetJob(ctx, "later")
	jobs, _ := h.Service.ListJobs(ctx, service.JobFilter{})
	if d.Status != herd.DeviceEnabled || tw.Tags["hacked"] != nil || j.Status == herd.JobCancelled || len(jobs) != 1 {
		t.Errorf("forged forms changed something: %s, tags %v, job %s, %d jobs", d.Status, tw.Tags, j.Status, len(jobs))
	}

	// registryReadWrite runs twin jobs, not method jobs (as PUT /jobs/v2).
	rw := newBrowser(t, h)
	rw.signIn("registryReadWrite")
	if p := rw.post("/ui/jobs/preview", url.Values{"type": {"scheduleUpdateTwin"}, "condition": {"*"}, "tags": {`{"a":1}`}}); p.status != 200 {
		t.Errorf("twin job preview as registryReadWrite: %d %s", p.status, p.body)
	}
	if p := rw.post("/ui/jobs/preview", url.Values{"type": {"scheduleDeviceMethod"}, "condition": {"*"}, "methodName": {"reboot"}}); p.status != http.StatusForbidden {
		t.Errorf("method job preview as registryReadWrite: %d", p.status)
	}
	// ... and pauses and resumes them.
	if p := rw.get("/ui/jobs/later"); !shown(p.body, "pausable") || shown(p.body, "resumable") || !shown(p.body, "cancellable") {
		t.Errorf("the twin job's page has no pause button for registryReadWrite")
	}
	rw.post("/ui/jobs/later/pause", url.Values{})
	if j, _ := h.Service.GetJob(ctx, "later"); j.Status != herd.JobPaused {
		t.Errorf("after Pause job: %s", j.Status)
	}
	if p := rw.get("/ui/jobs/later"); !shown(p.body, "resumable") || shown(p.body, "pausable") || !shown(p.body, "cancellable") {
		t.Errorf("the paused job's page has no resume button")
	}
	rw.post("/ui/jobs/later/resume", url.Values{})
	if j, _ := h.Service.GetJob(ctx, "later"); j.Status == herd.JobPaused || j.EndTime != nil {
		t.Errorf("after Resume job: %s", j.Status)
	}
}

func TestDevicePagesThroughTheFleet(t *testing.T) {
	h := hubtest.Start(t)
	ids := make([]string, 120)
	for i := range ids {
		ids[i] = "dev-" + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
	}
	createDevices(t, h, map[string]any{"building": 43}, ids...)
	createDevices(t, h, map[string]any{"building": 44}, "other-1", "other-2")
	b := newBrowser(t, h)
	b.signIn("iothubowner")
	rows := regexp.MustCompile(`name="page" value="([^"]+)"`)
	next := regexp.MustCompile(`<a href="([^"]+)" rel="next">`)
	path := "/ui/devices?q=" + url.QueryEscape("WHERE tags.building = 43")
	var seen []string
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		p := b.get(path)
		if p.status != 200 {
			t.Fatalf("%s: %d %s", path, p.status, p.body)
		}
		if !strings.Contains(p.body, "<strong>120</strong> devices match") {
			t.Errorf("page %d does not count 120 devices", pages+1)
		}
		page := rows.FindAllStringSubmatch(p.body, -1)
		if len(page) > 50 {
			t.Errorf("a page of %d rows", len(page))
		}
		for _, m := range page {
			seen = append(seen, m[1])
		}
		path = ""
		if m := next.FindStringSubmatch(p.body); m != nil {
			path = html.UnescapeString(m[1])
		}
	}
	if strings.Join(seen, ",") != strings.Join(ids, ",") {
		t.Errorf("the pages gave %d devices, want the 120 of building 43 in order", len(seen))
	}
	if p := b.get("/ui/devices?q=" + url.QueryEscape("tags.building == 43")); p.status != 400 || !strings.Contains(p.body, "line 1") {
		t.Errorf("a bad query: %d %s", p.status, p.body)
	}

	// A selection across pages becomes the job's condition.
	sel := func(pageIDs []string, checked ...string) {
		if p := b.post("/ui/selection", url.Values{"op": {"update"}, "back": {"/ui/devices"}, "page": pageIDs, "id": checked}); p.status != http.StatusSeeOther {
			t.Fatalf("selection: %d", p.status)
		}
	}
	sel(ids[:50], ids[1], ids[2])
	sel(ids[50:100], ids[60])
	sel(ids[:50], ids[2]) // ids[1] unticked
	p := b.post("/ui/jobs/preview", url.Values{"target": {"selection"}, "type": {"scheduleUpdateTwin"}, "tags": {`{"ring":"canary"}`}})
	if p.status != 200 || !strings.Contains(p.body, `data-testid="preview-count">2<`) {
		t.Fatalf("preview of the selection: %d %s", p.status, p.body)
	}
	for _, id := range []string{ids[2], ids[60]} {
		if !strings.Contains(p.body, ">"+id+"<") {
			t.Errorf("the preview's sample lacks %s", id)
		}
	}
}

func TestPreviewThenSchedule(t *testing.T) {
	h := hubtest.Start(t)
	createDevices(t, h, map[string]any{"building": 43}, "a1", "a2", "a3")
	createDevices(t, h, map[string]any{"building": 44}, "b1")
	b := newBrowser(t, h)
	b.signIn("iothubowner")
	p := b.post("/ui/jobs/preview", url.Values{"jobId": {"fw-2"}, "target": {"query"}, "condition": {"tags.building = 43"},
		"type": {"scheduleUpdateTwin"}, "desired": {`{"fw":"2.0"}`}, "maxExecution": {"600"}})
	if p.status != 200 || !strings.Contains(p.body, `data-testid="preview-count">3<`) {
		t.Fatalf("preview: %d %s", p.status, p.body)
	}
	if jobs, _ := h.Service.ListJobs(context.Background(), service.JobFilter{}); len(jobs) != 0 {
		t.Fatal("the preview stored a job")
	}
	field := func(name string) string {
		m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(p.body)
		if m == nil {
			t.Fatalf("no %s in the preview", name)
		}
		return html.UnescapeString(m[1])
	}
	body, mac := field("body"), field("mac")
	// What is scheduled is what was previewed.
	tampered := strings.Replace(body, "tags.building = 43", "*", 1)
	if p := b.post("/ui/jobs", url.Values{"jobId": {"fw-2"}, "body": {tampered}, "mac": {mac}}); p.status != 400 {
		t.Errorf("a changed body: %d", p.status)
	}
	if p := b.post("/ui/jobs", url.Values{"jobId": {"fw-3"}, "body": {body}, "mac": {mac}}); p.status != 400 {
		t.Errorf("another id: %d", p.status)
	}
	p = b.post("/ui/jobs", url.Values{"jobId": {"fw-2"}, "body": {body}, "mac": {mac}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/jobs/fw-2" {
		t.Fatalf("schedule: %d %q %s", p.status, p.header.Get("Location"), p.body)
	}
	j, err := h.Service.WaitJob(context.Background(), "fw-2", nil)
	if err != nil || j.Status != herd.JobCompleted || j.DeviceJobStatistics.SucceededCount != 3 || j.MaxExecutionTimeInSeconds != 600 {
		t.Fatalf("job: %+v %v", j, err)
	}
	jp := b.get("/ui/jobs/fw-2")
	if jp.status != 200 || !strings.Contains(jp.body, `data-testid="job-status">completed<`) || strings.Contains(jp.body, "data-job-events") {
		t.Errorf("job page of an ended job: %d", jp.status)
	}
	if p := b.get("/ui/jobs/fw-2?outcome=completed"); strings.Count(p.body, `href="/ui/devices/a`) != 3 {
		t.Errorf("the device table does not list the 3 completed devices")
	}
	// The live stream of an ended job is its end.
	if p := b.get("/ui/jobs/fw-2/events"); p.status != 200 || !strings.HasPrefix(p.body, "event: end\n") || !strings.Contains(p.body, `"succeeded":3`) {
		t.Errorf("events of an ended job: %d %q", p.status, p.body)
	}
	if p := b.get("/ui/jobs/nope"); p.status != 404 {
		t.Errorf("unknown job: %d", p.status)
	}
}

func TestTwinEditorETagConflict(t *testing.T) {
	h := hubtest.Start(t)
	createDevices(t, h, map[string]any{"building": 43}, "d1")
	b := newBrowser(t, h)
	b.signIn("iothubowner")
	p := b.get("/ui/devices/d1")
	etag := html.UnescapeString(regexp.MustCompile(`name="etag" value="([^"]+)"`).FindStringSubmatch(p.body)[1])
	// Someone else changes the twin meanwhile.
	if _, err := h.Service.UpdateTwin(context.Background(), "d1", herd.TwinPatch{Tags: map[string]any{"by": "api"}}, "*"); err != nil {
		t.Fatal(err)
	}
	edit := url.Values{"etag": {etag}, "tags": {`{"building": 43}`}, "desired": {`{"floor": 7}`}}
	p = b.post("/ui/devices/d1/twin", edit)
	if p.status != http.StatusConflict || !strings.Contains(p.body, "The twin changed since this page was loaded") || !strings.Contains(p.body, "&#34;floor&#34;: 7") {
		t.Fatalf("stale edit: %d %s", p.status, p.body)
	}
	if tw, _ := h.Service.GetTwin(context.Background(), "d1"); tw.Properties.Desired["floor"] != nil {
		t.Fatal("a stale edit was saved")
	}
	edit.Set("etag", html.UnescapeString(regexp.MustCompile(`name="etag" value="([^"]+)"`).FindStringSubmatch(p.body)[1]))
	if p := b.post("/ui/devices/d1/twin", edit); p.status != http.StatusSeeOther {
		t.Fatalf("edit with the current etag: %d %s", p.status, p.body)
	}
	tw, _ := h.Service.GetTwin(context.Background(), "d1")
	if fmt.Sprint(tw.Properties.Desired["floor"]) != "7" || tw.Tags["by"] != nil {
		t.Errorf("saved twin: tags %v desired %v", tw.Tags, tw.Properties.Desired)
	}
	p = b.get("/ui/devices/d1")
	if !strings.Contains(p.body, `data-testid="pending">1 desired property is not reported back yet`) {
		t.Errorf("the page does not show floor as not yet applied: %s", p.body)
	}
	if p := b.post("/ui/devices/d1/twin", url.Values{"etag": {"*"}, "tags": {"[1]"}}); p.status != 400 || !strings.Contains(p.body, "Tags must be a JSON object") {
		t.Errorf("bad JSON: %d", p.status)
	}
}

func TestRootRedirectsBrowsersOnly(t *testing.T) {
	h := hubtest.Start(t)
	b := newBrowser(t, h)
	if p := b.get("/"); p.status != http.StatusFound || p.header.Get("Location") != "/ui/" {
		t.Errorf("a browser's GET /: %d %q", p.status, p.header.Get("Location"))
	}
	if p := b.get("/", "Accept", "application/json"); p.status != 404 || p.header.Get("iothub-errorcode") != "NotFound" {
		t.Errorf("an API client's GET /: %d %q", p.status, p.header.Get("iothub-errorcode"))
	}
	if p := b.get("/devices/x?api-version=2021-04-12"); p.status != 401 {
		t.Errorf("REST without a token: %d", p.status)
	}
	if p := b.get("/ui/static/app.js"); p.status != 200 || !strings.Contains(p.header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js: %d %q", p.status, p.header.Get("Content-Type"))
	}
	if p := b.get("/ui/static/"); p.status != 404 {
		t.Errorf("a listing of the static files: %d", p.status)
	}
}

// shown says whether a job page shows one of its actions (pausable,
// resumable, cancellable): the form is there and not hidden.
func shown(body, action string) bool {
	return strings.Contains(body, `data-action="`+action+`"`) && !strings.Contains(body, `data-action="`+action+`" hidden`)
}

func timeIn(seconds int) time.Time { return time.Now().Add(time.Duration(seconds) * time.Second) }

// TestRolloutControls: the new-job form's rollout fields become the job's
// herd member, shown on the job page; bad figures are refused with the
// form kept.
func TestRolloutControls(t *testing.T) {
	h := hubtest.Start(t)
	createDevices(t, h, map[string]any{"building": 43}, "a1", "a2", "a3", "a4")
	b := newBrowser(t, h)
	b.signIn("iothubowner")
	form := url.Values{"jobId": {"paced"}, "target": {"query"}, "condition": {"*"}, "type": {"scheduleUpdateTwin"},
		"tags": {`{"r":1}`}, "rate": {"600"}, "waves": {"25, 100%"}, "pauseWaves": {"on"}, "abortPercent": {"10"}, "abortMin": {"2"}}
	p := b.post("/ui/jobs/preview", form)
	if p.status != 200 || !strings.Contains(p.body, `data-testid="preview-count">4<`) {
		t.Fatalf("preview: %d %s", p.status, p.body)
	}
	m := regexp.MustCompile(`name="body" value="([^"]*)"`).FindStringSubmatch(p.body)
	mac := regexp.MustCompile(`name="mac" value="([^"]*)"`).FindStringSubmatch(p.body)
	if m == nil || mac == nil {
		t.Fatal("no body in the preview")
	}
	body := html.UnescapeString(m[1])
	for _, want := range []string{`"maxPerMinute":600`, `"waves":[{"percent":25},{"percent":100}]`, `"pauseBetweenWaves":true`,
		`"failureType":"Any","thresholdPercentage":10,"minExecutedDevices":2`} {
		if !strings.Contains(body, want) {
			t.Errorf("the job body lacks %s: %s", want, body)
		}
	}
	if p := b.post("/ui/jobs", url.Values{"jobId": {"paced"}, "body": {body}, "mac": {html.UnescapeString(mac[1])}}); p.status != http.StatusSeeOther {
		t.Fatalf("schedule: %d %s", p.status, p.body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		jp := b.get("/ui/jobs/paced")
		if strings.Contains(jp.body, `data-testid="job-status">paused<`) {
			if !strings.Contains(jp.body, "600 devices a minute; waves 25%, 100%, pausing between them") ||
				!strings.Contains(jp.body, `data-testid="wave">2 of 2<`) || !strings.Contains(jp.body, "Any at 10% of at least 2 executed") {
				t.Errorf("job page: %s", jp.body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job did not pause after its first wave: %s", jp.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	form.Set("waves", "50, 10")
	if p := b.post("/ui/jobs/preview", form); p.status != 400 || !strings.Contains(p.body, "cumulative") || !strings.Contains(p.body, `value="50, 10"`) {
		t.Errorf("bad waves: %d %s", p.status, p.body)
	}
	form.Set("waves", "a lot")
	if p := b.post("/ui/jobs/preview", form); p.status != 400 || !strings.Contains(p.body, "percentages separated by commas") {
		t.Errorf("unparsable waves: %d", p.status)
	}
	// Retries: method jobs only, shown on the job page with the attempts.
	form = url.Values{"jobId": {"retried"}, "target": {"query"}, "condition": {"*"}, "type": {"scheduleDeviceMethod"},
		"methodName": {"reboot"}, "retryOffline": {"3"}, "retryBackoff": {"5"}}
	p = b.post("/ui/jobs/preview", form)
	m = regexp.MustCompile(`name="body" value="([^"]*)"`).FindStringSubmatch(p.body)
	mac = regexp.MustCompile(`name="mac" value="([^"]*)"`).FindStringSubmatch(p.body)
	if p.status != 200 || m == nil || mac == nil {
		t.Fatalf("retry preview: %d %s", p.status, p.body)
	}
	body = html.UnescapeString(m[1])
	if want := `"retry":{"criteria":[{"failureType":"DeviceNotOnline","maxAttempts":3}],"backoffSeconds":5}`; !strings.Contains(body, want) {
		t.Errorf("the job body lacks %s: %s", want, body)
	}
	if p := b.post("/ui/jobs", url.Values{"jobId": {"retried"}, "body": {body}, "mac": {html.UnescapeString(mac[1])}}); p.status != http.StatusSeeOther {
		t.Fatalf("schedule: %d %s", p.status, p.body)
	}
	if jp := b.get("/ui/jobs/retried"); !strings.Contains(jp.body, "DeviceNotOnline up to 3 attempts, waiting 5 s, times 2 after each") ||
		!strings.Contains(jp.body, `<th scope="col">Attempts</th>`) {
		t.Errorf("retry job page: %s", jp.body)
	}
	form.Set("type", "scheduleUpdateTwin")
	form.Set("tags", `{"r":2}`)
	if p := b.post("/ui/jobs/preview", form); p.status != 400 || !strings.Contains(p.body, "herd.retry applies to method jobs") {
		t.Errorf("retry of a twin job: %d", p.status)
	}
	form.Set("retryOffline", "")
	if p := b.post("/ui/jobs/preview", form); p.status != 400 || !strings.Contains(p.body, "needs the attempts") {
		t.Errorf("a retry wait without attempts: %d", p.status)
	}
	// Continuous: in the body, shown on the job page; refused with waves.
	form = url.Values{"jobId": {"always"}, "target": {"query"}, "condition": {"tags.r = 9"}, "type": {"scheduleUpdateTwin"},
		"tags": {`{"seen":1}`}, "continuous": {"on"}, "maxExecution": {"600"}}
	p = b.post("/ui/jobs/preview", form)
	m = regexp.MustCompile(`name="body" value="([^"]*)"`).FindStringSubmatch(p.body)
	mac = regexp.MustCompile(`name="mac" value="([^"]*)"`).FindStringSubmatch(p.body)
	if p.status != 200 || m == nil || mac == nil {
		t.Fatalf("continuous preview: %d %s", p.status, p.body)
	}
	if body = html.UnescapeString(m[1]); !strings.Contains(body, `"continuous":true`) {
		t.Errorf("the job body lacks continuous: %s", body)
	}
	if p := b.post("/ui/jobs", url.Values{"jobId": {"always"}, "body": {body}, "mac": {html.UnescapeString(mac[1])}}); p.status != http.StatusSeeOther {
		t.Fatalf("schedule: %d %s", p.status, p.body)
	}
	if jp := b.get("/ui/jobs/always"); !strings.Contains(jp.body, `data-testid="continuous"`) {
		t.Errorf("continuous job page: %s", jp.body)
	}
	form.Set("waves", "10, 100")
	if p := b.post("/ui/jobs/preview", form); p.status != 400 || !strings.Contains(p.body, "cannot be combined with herd.rollout.waves") ||
		!strings.Contains(p.body, `id="jn-continuous" name="continuous" type="checkbox" checked`) {
		t.Errorf("continuous with waves: %d %s", p.status, p.body)
	}
}

// TestModulePageMethod: the module page calls a direct method on the
// connected module and shows its answer.
func TestModulePageMethod(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	createDevices(t, h, nil, "gw")
	m, err := h.Service.CreateModule(ctx, herd.Module{DeviceID: "gw", ModuleID: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	cs := sas.ConnectionString{HostName: "localhost", DeviceID: "gw", ModuleID: "cam", SharedAccessKey: m.Authentication.SymmetricKey.PrimaryKey}
	d, err := device.New(cs.String(), device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.OnMethod("snap", func(context.Context, json.RawMessage) (int, any) { return 202, map[string]any{"by": "cam"} })
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, h)
	b.signIn("iothubowner")
	p := b.post("/ui/devices/gw/modules/cam/method", url.Values{"methodName": {"snap"}, "connectTimeout": {"10"}})
	if p.status != 200 || !strings.Contains(p.body, `data-testid="method-status">202<`) || !strings.Contains(p.body, "&#34;by&#34;: &#34;cam&#34;") {
		t.Errorf("module method from the dashboard: %d %s", p.status, p.body)
	}
	if p := b.post("/ui/devices/gw/modules/cam/method", url.Values{"methodName": {"snap"}, "payload": {"{"}}); !strings.Contains(p.body, "not valid JSON") {
		t.Errorf("a bad payload: %s", p.body)
	}
	// The module twin editor: saved with the page's etag, refused with a
	// stale one (the operator's text kept).
	tw, err := h.Service.GetModuleTwin(ctx, "gw", "cam")
	if err != nil {
		t.Fatal(err)
	}
	if p := b.post("/ui/devices/gw/modules/cam/twin", url.Values{"tags": {`{"zone":"north"}`}, "desired": {`{"fps":12}`}, "etag": {tw.ETag}}); p.status != http.StatusSeeOther {
		t.Fatalf("save the module twin: %d %s", p.status, p.body)
	}
	after, _ := h.Service.GetModuleTwin(ctx, "gw", "cam")
	if after.Tags["zone"] != "north" || fmt.Sprint(after.Properties.Desired["fps"]) != "12" {
		t.Errorf("module twin after the editor: %+v", after)
	}
	if p := b.post("/ui/devices/gw/modules/cam/twin", url.Values{"tags": {`{"zone":"south"}`}, "desired": {`{}`}, "etag": {tw.ETag}}); p.status != http.StatusConflict ||
		!strings.Contains(p.body, "changed since this page was loaded") || !strings.Contains(p.body, "south") {
		t.Errorf("a stale etag: %d %s", p.status, p.body)
	}
	if p := b.post("/ui/devices/gw/modules/cam/twin", url.Values{"tags": {`{`}, "etag": {after.ETag}}); p.status != http.StatusBadRequest {
		t.Errorf("bad JSON: %d", p.status)
	}
}
