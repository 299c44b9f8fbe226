// Package httpapi serves Herd's service-side REST API: the Azure IoT Hub
// REST API (api-version 2021-04-12) for devices, twins, direct methods,
// queries and jobs, with SAS authorization per policy permission, Azure's
// error format, and Prometheus metrics at /metrics.
//
// Wire rules follow §3 of the compatibility reference: JSON replies always
// carry Content-Type application/json; "/x" and "/x/" are the same route;
// path segments are percent-decoded once; every error has the
// iothub-errorcode header and an ErrorCode:<Name>;<text> message.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// Body size limits. A direct method may carry 128 KB of payload; bulk
// requests name up to 100 devices.
const (
	maxBody     = 256 << 10
	maxBulkBody = 4 << 20
)

// Config holds the server's dependencies.
type Config struct {
	Auth     *auth.Service
	Registry *registry.Service
	Twins    *twin.Service
	// Jobs serves /jobs/v2 (nil: no jobs API).
	Jobs *job.Service
	// Query serves POST /devices/query (nil: no query API).
	Query *query.Service
	// Connected counts the devices connected now (GET /statistics/service).
	Connected func() int64
	// Metrics is where the server registers its collectors and what
	// /metrics serves.
	Metrics *prometheus.Registry
	// MetricsPublic serves /metrics without authorization.
	MetricsPublic bool
	// Ready reports whether the hub can serve (GET /readyz): nil, or why
	// not. nil Ready means always ready.
	Ready func(ctx context.Context) error
	// BodyTimeout bounds the time a request's body may take to arrive
	// once its headers have (0: DefaultBodyTimeout).
	BodyTimeout time.Duration
	Log         *slog.Logger
	Now         func() time.Time
}

// DefaultBodyTimeout is how long a request body may take to arrive. The
// SDKs send a body of at most a few hundred KB right after its headers.
const DefaultBodyTimeout = 30 * time.Second

// Server is the REST API.
type Server struct {
	cfg      Config
	mux      *http.ServeMux
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New returns a REST API server. Further routes are added with Handle
// before the handler serves requests.
func New(cfg Config) *Server {
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herd_http_requests_total",
		Help: "REST API requests by route, method and status code.",
	}, []string{"route", "method", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "herd_http_request_duration_seconds",
		Help:    "REST API request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
	}, []string{"route"})
	cfg.Metrics.MustRegister(s.requests, s.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herd_registry_devices",
			Help: "Devices in the registry.",
		}, func() float64 {
			st, err := cfg.Registry.Statistics(context.Background())
			if err != nil {
				return 0
			}
			return float64(st.TotalDeviceCount)
		}))
	s.routes()
	return s
}

// Handler returns the http.Handler serving the API.
func (s *Server) Handler() http.Handler { return s.mux }

// Endpoint is one operation of the API.
type Endpoint struct {
	// Rights lists the permissions of which the caller's policy needs at
	// least one.
	Rights auth.Rights
	// Serve handles the request; a returned error is written in Azure's
	// format.
	Serve func(w http.ResponseWriter, r *http.Request) error
}

// Handle registers the endpoints of one path pattern by HTTP method. The
// pattern is also served with a trailing slash. Requests are checked for
// api-version and authorization before Serve runs; other methods get 405.
func (s *Server) Handle(pattern string, endpoints map[string]Endpoint) {
	h := s.endpoint(pattern, endpoints)
	s.mux.Handle(pattern, h)
	s.mux.Handle(pattern+"/{$}", h) // exactly one trailing slash, not a subtree

}

func (s *Server) endpoint(route string, endpoints map[string]Endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		body := s.boundBody(w, r)
		err := s.serve(rec, r, endpoints)
		if err != nil {
			if herd.ErrorCodeOf(err) == herd.ErrInternal {
				s.cfg.Log.Error("request failed", "op", r.Method+" "+route, "err", err)
			}
			if body != nil && !body.eof {
				refuse(w, rec, r, err, s.cfg.Now())
			} else {
				writeError(rec, err, s.cfg.Now())
			}
		}
		s.requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
		s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, endpoints map[string]Endpoint) error {
	ep, ok := endpoints[r.Method]
	if !ok {
		return herd.Errorf(herd.ErrMethodNotAllowed, "%s is not supported on %s", r.Method, r.URL.Path)
	}
	if err := checkAPIVersion(r); err != nil {
		return err
	}
	p, err := s.cfg.Auth.AuthorizeService(r.Header.Get("Authorization"), ep.Rights, r.PathValue("id"))
	if err != nil {
		return err
	}
	return ep.Serve(w, r.WithContext(context.WithValue(r.Context(), policyKey{}, p)))
}

// policyKey is the request-context key of the caller's policy.
type policyKey struct{}

// callerPolicy returns the policy that authorized r (set by serve).
func callerPolicy(r *http.Request) auth.Policy {
	p, _ := r.Context().Value(policyKey{}).(auth.Policy)
	return p
}

// boundBody gives a request that has a body BodyTimeout for it to arrive:
// the connection's read deadline is set now and cleared when the body has
// been read to its end (a handler may run longer than that: a direct
// method waits for its device). It returns nil for a request without a
// body.
func (s *Server) boundBody(w http.ResponseWriter, r *http.Request) *boundedBody {
	if r.ContentLength == 0 {
		return nil
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) != nil {
		return nil // not a connection with deadlines (a test recorder)
	}
	b := &boundedBody{ReadCloser: r.Body, rc: rc, timeout: s.cfg.BodyTimeout}
	r.Body = b
	return b
}

// A refused request's body is read and thrown away after the answer, so
// that the client can finish sending it and read the answer, up to
// drainBytes and for at most drainTime; a longer or slower body is cut off.
const (
	drainBytes = 2*maxBulkBody + 1<<20
	drainTime  = 2 * time.Second
)

// refuse answers err to a request refused before its body was read to its
// end (no token, no right, too large, no such route) and closes the
// connection after it, rather than keeping it for a next request behind a
// body that may never come. The answer goes out at once. Closing a socket
// with unread data makes the kernel reset the connection, and a reset
// makes the client's kernel drop the answer it has not read yet: an Azure
// SDK would see "connection reset" instead of 413 MessageTooLarge. So
// the rest of the body is read and discarded, within drainBytes and
// drainTime, before the connection closes. rec is w or a wrapper of it
// that the answer is written through.
func refuse(w, rec http.ResponseWriter, r *http.Request, err error, now time.Time) {
	rc := http.NewResponseController(w)
	if r.ProtoMajor > 1 {
		// HTTP/2 ends a stream without ending the connection.
		writeError(rec, err, now)
		return
	}
	// Full duplex: the body stays readable after the answer is sent.
	duplex := rc.EnableFullDuplex() == nil
	w.Header().Set("Connection", "close")
	writeError(rec, err, now)
	if !duplex || rc.Flush() != nil || r.ContentLength > drainBytes {
		// net/http still reads up to 256 KB of the body once the handler
		// returns; a read deadline already past ends that at once.
		_ = rc.SetReadDeadline(time.Now())
		return
	}
	_ = rc.SetReadDeadline(time.Now().Add(drainTime))
	_, _ = io.CopyN(io.Discard, r.Body, drainBytes)
	_ = rc.SetReadDeadline(time.Now())
}

// boundedBody is a request body read under a deadline; eof says it was
// read to its end.
type boundedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	eof     bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, io.EOF) && !b.eof:
		b.eof = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("the request body did not arrive within %s", b.timeout)
	}
	return n, err
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Flush lets streaming endpoints (Server-Sent Events) flush through.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// apiVersions are the published IoT Hub service API versions; clients send
// one of them.
var apiVersions = map[string]bool{
	"2016-02-03": true, "2016-11-14": true, "2017-06-30": true, "2017-11-08-preview": true,
	"2018-01-22": true, "2018-03-01-preview": true, "2018-04-01": true, "2018-06-30": true,
	"2018-08-30-preview": true, "2019-03-30": true, "2019-07-01-preview": true,
	"2019-10-01": true, "2020-03-13": true, "2020-05-31-preview": true,
	"2020-06-30": true, "2020-06-30-preview": true, "2020-09-30": true, "2021-04-12": true,
}

func checkAPIVersion(r *http.Request) error {
	v := r.URL.Query().Get("api-version")
	if v == "" {
		return herd.Errorf(herd.ErrInvalidProtocolVersion, "the request has no api-version; use api-version=%s", herd.APIVersion)
	}
	if !apiVersions[v] {
		return herd.Errorf(herd.ErrInvalidProtocolVersion, "api-version %q is not supported; use %s", v, herd.APIVersion)
	}
	return nil
}

// routes registers the API's endpoints.
func (s *Server) routes() {
	read := auth.RegistryRead | auth.RegistryWrite
	write := auth.RegistryWrite
	svc := auth.ServiceConnect
	s.Handle("/devices", map[string]Endpoint{
		http.MethodGet:  {read, s.listDevices},
		http.MethodPost: {write, s.bulkDevices},
	})
	s.Handle("/devices/{id}", map[string]Endpoint{
		http.MethodGet:    {read, s.getDevice},
		http.MethodPut:    {write, s.putDevice},
		http.MethodDelete: {write, s.deleteDevice},
	})
	s.moduleRoutes(read, write)
	s.Handle("/statistics/devices", map[string]Endpoint{http.MethodGet: {read, s.registryStatistics}})
	s.Handle("/statistics/service", map[string]Endpoint{http.MethodGet: {read | svc, s.serviceStatistics}})
	s.Handle("/twins/{id}", map[string]Endpoint{
		http.MethodGet:   {svc, s.getTwin},
		http.MethodPatch: {svc, s.patchTwin},
		http.MethodPut:   {svc, s.replaceTwin},
	})
	s.moduleTwinRoutes(svc)
	s.jobRoutes()
	s.queryRoutes()
	s.mux.Handle("/metrics", s.metricsHandler())
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := herd.Errorf(herd.ErrNotFound, "no such route: %s %s", r.Method, r.URL.Path)
		if r.ContentLength != 0 {
			refuse(w, w, r, err, s.cfg.Now())
		} else {
			writeError(w, err, s.cfg.Now())
		}
	}))
}

// readyz answers GET /readyz, for load balancers and orchestrators,
// without a token: 200 "ready" when the store answers and the hub is
// serving, 503 with the reason otherwise (starting, shutting down, store
// unreachable). GET /healthz only says the process is up.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
	}
	writeText(w, http.StatusOK, "ready")
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, text+"\n")
}

func (s *Server) metricsHandler() http.Handler {
	h := promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{})
	if s.cfg.MetricsPublic {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := auth.RegistryRead | auth.RegistryWrite | auth.ServiceConnect
		if _, err := s.cfg.Auth.AuthorizeService(r.Header.Get("Authorization"), need, ""); err != nil {
			writeError(w, err, s.cfg.Now())
			return
		}
		h.ServeHTTP(w, r)
	})
}

// decodeBody reads a JSON request body of at most limit bytes into v.
// Syntax errors are IotHubFormatError, wrong types ArgumentInvalid, and an
// oversize body MessageTooLarge.
func decodeBody(r *http.Request, limit int64, v any) error {
	body, err := readBody(r, limit)
	if err != nil {
		return err
	}
	return decodeJSON(body, v)
}

// readBody reads the whole request body, refusing more than limit bytes.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, herd.Errorf(herd.ErrIotHubFormatError, "reading the request body: %v", err)
	}

	if int64(len(body)) > limit {
		return nil, herd.Errorf(herd.ErrMessageTooLarge, "the request body is larger than %d bytes", limit)
	}
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD and store
	// what the client never sent.
	if !utf8.Valid(body) {
		return nil, herd.Errorf(herd.ErrIotHubFormatError, "the request body is not valid UTF-8 (at byte %d)", invalidUTF8At(body))
	}
	return body, nil
}

// invalidUTF8At returns the offset of the first byte of b that is not
// part of valid UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

func decodeJSON(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return herd.Errorf(herd.ErrArgumentNull, "the request body is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // twin values inside bulk requests keep exact numbers
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON value")
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "the body"
		}
		return herd.Errorf(herd.ErrArgumentInvalid, "%s must be %s, not %s", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	default:
		return herd.Errorf(herd.ErrIotHubFormatError, "the request body is not valid JSON: %v", err)
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	default:
		return "a number"
	}
}

// writeEntity writes an entity with its ETag header.
func writeEntity(w http.ResponseWriter, etag string, v any) {
	w.Header().Set("ETag", `"`+etag+`"`)
	writeJSON(w, http.StatusOK, v)
}
