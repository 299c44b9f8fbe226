package httpapi_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// raw sends one HTTP request to the hub, signed with a policy of the hub
// unless the caller sets Authorization, and returns the reply.
type raw struct {
	t    *testing.T
	h    *hubtest.Hub
	http *http.Client
}

func newRaw(t *testing.T, h *hubtest.Hub) *raw {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	return &raw{t: t, h: h, http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

// in returns a copy of r that fails t, for use in a subtest.
func (r *raw) in(t *testing.T) *raw {
	c := *r
	c.t = t
	return &c
}

func (r *raw) token(policy string) string {
	p, ok := r.h.Auth.Policy(policy)
	if !ok {
		r.t.Fatalf("no policy %s", policy)
	}
	tok, err := sas.ServiceToken("localhost", policy, p.PrimaryKey, time.Now().Add(time.Hour))
	if err != nil {
		r.t.Fatal(err)
	}
	return tok
}

func (r *raw) do(method, path, body string, header map[string]string) (*http.Response, []byte) {
	r.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, r.h.URL+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", r.token("iothubowner"))
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := r.http.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, b
}

var legacyMessage = regexp.MustCompile(`^ErrorCode:([A-Za-z]+);.+`)

// expectError checks Azure's error format: status, iothub-errorcode header,
// JSON content type, and a Message of the form ErrorCode:<Name>;<text>.
func expectError(t *testing.T, resp *http.Response, body []byte, status int, code herd.ErrorCode) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if got := resp.Header.Get("iothub-errorcode"); got != string(code) {
		t.Errorf("iothub-errorcode %q, want %q", got, code)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e struct{ Message, ExceptionMessage string }
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not JSON: %s", body)
	}
	m := legacyMessage.FindStringSubmatch(e.Message)
	if m == nil || m[1] != string(code) {
		t.Errorf("Message %q, want ErrorCode:%s;<text>", e.Message, code)
	}
	if !strings.HasPrefix(e.ExceptionMessage, "Tracking ID:") {
		t.Errorf("ExceptionMessage %q, want Tracking ID:…", e.ExceptionMessage)
	}
}

const v = "?api-version=2021-04-12"

func TestDeviceLifecycle(t *testing.T) {
	h := hubtest.Start(t)
	c := h.Service
	ctx := context.Background()

	d, err := c.CreateDevice(ctx, herd.Device{DeviceID: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	k := d.Authentication.SymmetricKey
	if len(k.PrimaryKey) != 44 || len(k.SecondaryKey) != 44 || k.PrimaryKey == k.SecondaryKey {
		t.Errorf("generated keys %q %q: want two distinct 256-bit base64 keys", k.PrimaryKey, k.SecondaryKey)
	}
	if d.ETag != "MQ==" || d.Status != herd.DeviceEnabled || d.ConnectionState != herd.Disconnected || d.GenerationID == "" || d.Authentication.Type != "sas" {
		t.Errorf("created device %+v", d)
	}
	supplied := herd.SymmetricKey{PrimaryKey: "c2VjcmV0a2V5LTAxMjM0NTY3ODlhYmNkZWY=", SecondaryKey: "b3RoZXJrZXktMDEyMzQ1Njc4OWFiY2RlZg=="}
	d2, err := c.CreateDevice(ctx, herd.Device{DeviceID: "dev-2", Authentication: herd.Authentication{SymmetricKey: supplied}})
	if err != nil {
		t.Fatal(err)
	}
	if d2.Authentication.SymmetricKey != supplied {
		t.Errorf("supplied keys not kept: %+v", d2.Authentication.SymmetricKey)
	}
	if _, err := c.CreateDevice(ctx, herd.Device{DeviceID: "dev-1"}); !herd.IsCode(err, herd.ErrDeviceAlreadyExists) {
		t.Errorf("duplicate create: %v, want DeviceAlreadyExists", err)
	}

	got, err := c.GetDevice(ctx, "dev-1")
	if err != nil || got.Authentication.SymmetricKey != k {
		t.Fatalf("get: %v %+v", err, got)
	}
	// Update with a stale etag fails; with the current one it works and
	// empty keys keep the old keys.
	upd := herd.Device{DeviceID: "dev-1", Status: herd.DeviceDisabled}
	if _, err := c.UpdateDevice(ctx, upd, "Mg=="); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("stale etag update: %v, want PreconditionFailed", err)
	}
	u, err := c.UpdateDevice(ctx, upd, got.ETag)
	if err != nil {
		t.Fatal(err)
	}
	if u.Status != herd.DeviceDisabled || u.ETag != "Mg==" || u.Authentication.SymmetricKey != k || u.StatusUpdatedTime.IsZero() {
		t.Errorf("updated device %+v", u)
	}
	if _, err := c.UpdateDevice(ctx, herd.Device{DeviceID: "ghost"}, "*"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("update unknown: %v, want DeviceNotFound", err)
	}

	list, err := c.ListDevices(ctx, 1)
	if err != nil || len(list) != 1 || list[0].DeviceID != "dev-1" {
		t.Errorf("list top=1: %v %v", err, list)
	}
	st, err := c.RegistryStatistics(ctx)
	if err != nil || st != (herd.RegistryStatistics{TotalDeviceCount: 2, EnabledDeviceCount: 1, DisabledDeviceCount: 1}) {
		t.Errorf("statistics: %v %+v", err, st)
	}
	if ss, err := c.ServiceStatistics(ctx); err != nil || ss.ConnectedDeviceCount != 0 {
		t.Errorf("service statistics: %v %+v", err, ss)
	}

	if err := c.DeleteDevice(ctx, "dev-1", "MQ=="); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("stale etag delete: %v, want PreconditionFailed", err)
	}
	if err := c.DeleteDevice(ctx, "dev-1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetDevice(ctx, "dev-1"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("get deleted: %v, want DeviceNotFound", err)
	}
	if _, err := c.GetTwin(ctx, "dev-1"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("twin of deleted device: %v, want DeviceNotFound", err)
	}
	if err := c.DeleteDevice(ctx, "dev-1", ""); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("delete twice: %v, want DeviceNotFound", err)
	}
}

func TestDeviceIDRules(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	good := []string{"a", "A-b.c+d%e_f#g*h?i!j(k)l,m=n@o$p'q:r;s", strings.Repeat("x", 128)}
	for _, id := range good {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); err != nil {
			t.Errorf("create %q: %v", id, err)
			continue
		}
		if d, err := h.Service.GetDevice(ctx, id); err != nil || d.DeviceID != id {
			t.Errorf("get %q: %v", id, err)
		}
	}
	for _, id := range []string{strings.Repeat("x", 129), "sp ace", "uni\u00e9", "tab\t", "brace{", "back\\slash", "quote\""} {
		if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: id}); !herd.IsCode(err, herd.ErrArgumentInvalid) {
			t.Errorf("create %q: %v, want ArgumentInvalid", id, err)
		}
	}
	st, _ := h.Service.RegistryStatistics(ctx)
	if st.TotalDeviceCount != int64(len(good)) {
		t.Errorf("%d devices registered, want %d: invalid ids must write nothing", st.TotalDeviceCount, len(good))
	}
}

func TestBulk(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "exists"}); err != nil {
		t.Fatal(err)
	}
	res, err := h.Service.BulkDevices(ctx, []herd.ImportDevice{
		{ID: "b1", ImportMode: "create", Tags: map[string]any{"building": 43}},
		{ID: "b2", ImportMode: "Create", Status: herd.DeviceDisabled},
		{ID: "exists", ImportMode: "create"},
		{ID: "bad id", ImportMode: "create"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsSuccessful || len(res.Errors) != 2 {
		t.Fatalf("result %+v: want 2 per-device errors", res)
	}
	codes := map[string]string{}
	for _, e := range res.Errors {
		codes[e.DeviceID] = e.ErrorCode
	}
	if codes["exists"] != "DeviceAlreadyExists" || codes["bad id"] != "ArgumentInvalid" {
		t.Errorf("per-device errors %+v", res.Errors)
	}
	tw, err := h.Service.GetTwin(ctx, "b1")
	if err != nil || asJSON(tw.Tags) != `{"building":43}` {
		t.Errorf("bulk-created twin tags: %v %v", err, tw)
	}
	if d, _ := h.Service.GetDevice(ctx, "b2"); d == nil || d.Status != herd.DeviceDisabled {
		t.Errorf("b2 = %+v", d)
	}
	res, err = h.Service.BulkDevices(ctx, []herd.ImportDevice{
		{ID: "b1", ImportMode: "Delete"}, {ID: "b2", ImportMode: "UpdateIfMatchETag", ETag: "MQ==", Status: herd.DeviceEnabled},
		{ID: "b3", ImportMode: "createOrUpdate"},
	})
	if err != nil || !res.IsSuccessful {
		t.Fatalf("second bulk: %v %+v", err, res)
	}
	if d, _ := h.Service.GetDevice(ctx, "b2"); d.Status != herd.DeviceEnabled {
		t.Errorf("b2 not updated")
	}
	if _, err := h.Service.BulkDevices(ctx, []herd.ImportDevice{{ID: "x", ImportMode: "create"}, {ID: "x", ImportMode: "delete"}}); !herd.IsCode(err, herd.ErrDeviceDefinedMultipleTimes) {
		t.Errorf("same id twice: %v, want DeviceDefinedMultipleTimes", err)
	}
	many := make([]herd.ImportDevice, 101)
	for i := range many {
		many[i] = herd.ImportDevice{ID: "m" + string(rune('a'+i%26)) + strings.Repeat("x", i), ImportMode: "create"}
	}
	if _, err := h.Service.BulkDevices(ctx, many); !herd.IsCode(err, herd.ErrTooManyDevices) {
		t.Errorf("101 devices: %v, want TooManyDevices", err)
	}
	st, _ := h.Service.RegistryStatistics(ctx)
	if st.TotalDeviceCount != 3 { // exists, b2, b3
		t.Errorf("%d devices after bulk, want 3", st.TotalDeviceCount)
	}
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestTwins(t *testing.T) {
	h := hubtest.Start(t)
	c := h.Service
	ctx := context.Background()
	if _, err := c.CreateDevice(ctx, herd.Device{DeviceID: "d"}); err != nil {
		t.Fatal(err)
	}
	tw, err := c.GetTwin(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if tw.DeviceID != "d" || tw.Properties.Desired["$version"] != json.Number("1") || tw.DeviceETag != "MQ==" || tw.ETag == "" {
		t.Errorf("new twin %s", asJSON(tw))
	}
	patch := herd.TwinPatch{Tags: map[string]any{"building": 43}, Properties: &herd.PatchProperties{Desired: map[string]any{"floor": 3}}}
	tw2, err := c.UpdateTwin(ctx, "d", patch, tw.ETag)
	if err != nil {
		t.Fatal(err)
	}
	if tw2.ETag == tw.ETag || tw2.Properties.Desired["$version"] != json.Number("2") || tw2.Properties.Desired["floor"] != json.Number("3") {
		t.Errorf("patched twin %s", asJSON(tw2))
	}
	if _, err := c.UpdateTwin(ctx, "d", patch, tw.ETag); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("stale twin etag: %v, want PreconditionFailed", err)
	}
	tw3, err := c.UpdateTwin(ctx, "d", herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"floor": nil, "mode": "eco"}}}, "*")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tw3.Properties.Desired["floor"]; ok || tw3.Properties.Desired["$version"] != json.Number("3") {
		t.Errorf("null did not delete, or version wrong: %s", asJSON(tw3.Properties.Desired))
	}
	tw4, err := c.ReplaceTwin(ctx, "d", herd.TwinPatch{Tags: map[string]any{"only": true}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if asJSON(tw4.Tags) != `{"only":true}` || len(tw4.Properties.Desired) != 2 { // $version, $metadata
		t.Errorf("replace: tags %s desired %s", asJSON(tw4.Tags), asJSON(tw4.Properties.Desired))
	}
	if _, err := c.UpdateTwin(ctx, "nope", patch, ""); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("patch unknown twin: %v", err)
	}
}

func TestWireFormat(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)

	resp, body := r.do("PUT", "/devices/w1"+v, `{"deviceId":"w1"}`, map[string]string{"Content-Type": "application/json; charset=utf-8"})
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"MQ=="` || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("create: %d ETag %q CT %q %s", resp.StatusCode, resp.Header.Get("ETag"), resp.Header.Get("Content-Type"), body)
	}
	// Node sends no body and no Content-Type on GET; C# uses trailing slashes.
	for _, path := range []string{"/devices" + v, "/devices/" + v + "&top=5", "/devices/w1" + v, "/devices/w1/" + v, "/twins/w1" + v} {
		if resp, body := r.do("GET", path, "", nil); resp.StatusCode != 200 || !json.Valid(body) {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
	resp, body = r.do("GET", "/twins/w1"+v, "", nil)
	var tw herd.Twin
	json.Unmarshal(body, &tw)
	if resp.Header.Get("ETag") != `"`+tw.ETag+`"` {
		t.Errorf("twin ETag header %q, body etag %q", resp.Header.Get("ETag"), tw.ETag)
	}
	// Percent-encoded ids are decoded exactly once.
	if resp, body := r.do("PUT", "/devices/a%25b%23c%3Fd"+v, `{}`, nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"deviceId":"a%b#c?d"`) {
		t.Errorf("encoded id: %d %s", resp.StatusCode, body)
	}

	cases := []struct {
		name, method, path, body string
		header                   map[string]string
		status                   int
		code                     herd.ErrorCode
	}{
		{"no api-version", "GET", "/devices/w1", "", nil, 400, herd.ErrInvalidProtocolVersion},
		{"unknown api-version", "GET", "/devices/w1?api-version=1999-01-01", "", nil, 400, herd.ErrInvalidProtocolVersion},
		{"no token", "GET", "/devices/w1" + v, "", map[string]string{"Authorization": ""}, 401, herd.ErrUnauthorized},
		{"forged token", "GET", "/devices/w1" + v, "", map[string]string{"Authorization": "SharedAccessSignature sr=localhost&sig=AAAA&se=99999999999&skn=iothubowner"}, 401, herd.ErrUnauthorized},
		{"registryRead writes", "PUT", "/devices/w2" + v, `{}`, map[string]string{"Authorization": r.token("registryRead")}, 401, herd.ErrUnauthorized},
		{"service reads registry", "GET", "/devices/w1" + v, "", map[string]string{"Authorization": r.token("service")}, 401, herd.ErrUnauthorized},
		{"registryReadWrite reads twin", "GET", "/twins/w1" + v, "", map[string]string{"Authorization": r.token("registryReadWrite")}, 401, herd.ErrUnauthorized},
		{"device policy", "GET", "/devices/w1" + v, "", map[string]string{"Authorization": r.token("device")}, 401, herd.ErrUnauthorized},
		{"malformed json", "PUT", "/devices/w3" + v, `{"deviceId":`, nil, 400, herd.ErrIotHubFormatError},
		{"wrong type", "PUT", "/devices/w3" + v, `{"deviceId":5}`, nil, 400, herd.ErrArgumentInvalid},
		{"bad status", "PUT", "/devices/w3" + v, `{"status":"paused"}`, nil, 400, herd.ErrArgumentInvalid},
		{"bad key", "PUT", "/devices/w3" + v, `{"authentication":{"symmetricKey":{"primaryKey":"short"}}}`, nil, 400, herd.ErrArgumentInvalid},
		{"id mismatch", "PUT", "/devices/w3" + v, `{"deviceId":"other"}`, nil, 400, herd.ErrArgumentInvalid},
		{"empty body", "PUT", "/devices/w3" + v, ``, nil, 400, herd.ErrArgumentNull},
		{"too large", "PUT", "/devices/w3" + v, `{"statusReason":"` + strings.Repeat("x", 300<<10) + `"}`, nil, 413, herd.ErrMessageTooLarge},
		// Far more than the socket buffers hold: the client is still
		// sending when the answer comes, and must be able to read it.
		{"far too large", "PUT", "/devices/w3" + v, `{"statusReason":"` + strings.Repeat("x", 6<<20) + `"}`, nil, 413, herd.ErrMessageTooLarge},
		{"far too large, no token", "PUT", "/devices/w3" + v, `{"statusReason":"` + strings.Repeat("x", 6<<20) + `"}`, map[string]string{"Authorization": ""}, 401, herd.ErrUnauthorized},
		{"twin bad key", "PATCH", "/twins/w1" + v, `{"tags":{"a.b":1}}`, nil, 400, herd.ErrArgumentInvalid},
		{"twin malformed", "PATCH", "/twins/w1" + v, `{"tags":{`, nil, 400, herd.ErrIotHubFormatError},
		{"twin too big", "PATCH", "/twins/w1" + v, `{"properties":{"desired":{` + bigProps(40) + `}}}`, nil, 400, herd.ErrArgumentInvalid},
		{"twin arrays too deep", "PATCH", "/twins/w1" + v, `{"tags":{"a":` + strings.Repeat("[", 10) + strings.Repeat("]", 10) + `}}`, nil, 400, herd.ErrArgumentInvalid},
		{"twin arrays past SQLite's depth", "PUT", "/twins/w1" + v, `{"properties":{"desired":{"a":` + strings.Repeat("[", 1200) + strings.Repeat("]", 1200) + `}}}`, nil, 400, herd.ErrArgumentInvalid},
		{"twin invalid UTF-8", "PATCH", "/twins/w1" + v, "{\"tags\":{\"a\":\"\xc3\x28\"}}", nil, 400, herd.ErrIotHubFormatError},
		{"device invalid UTF-8", "PUT", "/devices/w3" + v, "{\"statusReason\":\"\xff\"}", nil, 400, herd.ErrIotHubFormatError},
		{"twin stale etag", "PATCH", "/twins/w1" + v, `{"tags":{"a":1}}`, map[string]string{"If-Match": `"abc"`}, 412, herd.ErrPreconditionFailed},
		{"unknown device", "GET", "/devices/nope" + v, "", nil, 404, herd.ErrDeviceNotFound},
		{"unknown route", "GET", "/nothing/here" + v, "", nil, 404, herd.ErrNotFound},
		{"below a route", "GET", "/devices/w1/extra/deep" + v, "", nil, 404, herd.ErrNotFound},
		{"wrong method", "POST", "/twins/w1" + v, `{}`, nil, 405, herd.ErrMethodNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := r.in(t).do(c.method, c.path, c.body, c.header)
			expectError(t, resp, body, c.status, c.code)
		})
	}
	// None of the refused requests wrote anything.
	st, _ := h.Service.RegistryStatistics(context.Background())
	if st.TotalDeviceCount != 2 {
		t.Errorf("%d devices, want 2 (w1 and a%%b#c?d)", st.TotalDeviceCount)
	}
	after, _ := h.Service.GetTwin(context.Background(), "w1")
	if after.ETag != tw.ETag || len(after.Tags) != 0 {
		t.Errorf("refused twin writes changed the twin: %s", asJSON(after))
	}

	resp, body = r.do("DELETE", "/devices/w1"+v, "", map[string]string{"If-Match": `"*"`})
	if resp.StatusCode != 204 || len(body) != 0 {
		t.Errorf("delete: %d %q", resp.StatusCode, body)
	}
}

func bigProps(kb int) string {
	var b bytes.Buffer
	for i := 0; i < kb; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"p` + strings.Repeat("0", 3) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":"` + strings.Repeat("v", 1000) + `"`)
	}
	return b.String()
}

func TestMetrics(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	resp, body := r.do("GET", "/metrics", "", map[string]string{"Authorization": ""})
	expectError(t, resp, body, 401, herd.ErrUnauthorized)
	r.do("GET", "/statistics/devices"+v, "", nil)
	resp, body = r.do("GET", "/metrics", "", map[string]string{"Authorization": r.token("registryRead")})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `herd_http_requests_total{code="200",method="GET",route="/statistics/devices"} 1`) ||
		!strings.Contains(string(body), "herd_registry_devices 0") {
		t.Errorf("metrics: %d\n%s", resp.StatusCode, body)
	}
	pub := hubtest.Start(t, hubtest.WithConfig(func(c *hub.Config) { c.MetricsPublic = true }))
	if resp, _ := newRaw(t, pub).do("GET", "/metrics", "", map[string]string{"Authorization": ""}); resp.StatusCode != 200 {
		t.Errorf("--metrics-public: %d", resp.StatusCode)
	}
}

// TestHealthAndReadiness: GET /healthz and GET /readyz answer without a
// token or api-version; /readyz says 503 with the reason once the store
// no longer answers.
func TestHealthAndReadiness(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	noAuth := map[string]string{"Authorization": ""}
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		resp, body := r.do("GET", path, "", noAuth)
		if resp.StatusCode != 200 || string(body) != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("GET %s: %d %q %s", path, resp.StatusCode, body, resp.Header.Get("Content-Type"))
		}
	}
	if resp, _ := r.do("POST", "/readyz", "", noAuth); resp.StatusCode == 200 {
		t.Errorf("POST /readyz: %d", resp.StatusCode)
	}
	// The hub runs: its job engine has recovered and runs a job. (A store
	// gone before the engine's start-up recovery fails the hub's start,
	// which is another case; on a loaded machine the engine's goroutine
	// may not have read the store yet when the test gets here.)
	ctx := context.Background()
	if _, err := h.Service.ScheduleTwinUpdate(ctx, "ready", "deviceId = 'none'", herd.TwinPatch{Tags: map[string]any{"a": 1}}, service.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.WaitJob(ctx, "ready", nil); err != nil {
		t.Fatal(err)
	}
	h.Store.Close() // the store goes away under a running hub
	resp, body := r.do("GET", "/readyz", "", noAuth)
	if resp.StatusCode != 503 || !strings.Contains(string(body), "not ready") {
		t.Errorf("GET /readyz without a store: %d %q", resp.StatusCode, body)
	}
	if resp, _ := r.do("GET", "/healthz", "", noAuth); resp.StatusCode != 200 {
		t.Errorf("GET /healthz without a store: %d (the process is up)", resp.StatusCode)
	}
}
