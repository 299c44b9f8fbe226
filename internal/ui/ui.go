// Package ui owns Herd's operator dashboard, served at /ui/ on the hub's
// HTTPS port: server-rendered html/template pages over the same domain
// services and rights checks as the REST API (internal/httpapi), plain
// HTML forms, and a few lines of JavaScript for the live parts
// (Server-Sent Events through the browser's EventSource).
//
// Security model (docs/dashboard.md): an operator signs in with a service
// connection string, which is verified once exactly as a REST token of that
// policy would be and exchanged for an opaque session id in an HttpOnly,
// Secure, SameSite=Strict cookie; the key is never stored in the browser
// nor in the session (only its hash, so that a rotated key ends the
// session). Every state-changing request is a POST that passes the
// standard library's cross-origin protection (Sec-Fetch-Site, Origin) and
// carries the session's CSRF token; every action checks the session
// policy's rights with auth.Policy.Require, as the REST endpoint of the same
// action does. Pages carry a strict Content-Security-Policy: no inline
// script or style, nothing from another origin.
package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/events"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/method"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// Prefix is where the dashboard is mounted.
const Prefix = "/ui/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Invoker invokes direct methods (internal/method.Service).
type Invoker interface {
	Invoke(ctx context.Context, deviceID string, req herd.MethodRequest, opts ...method.Option) (*herd.MethodResult, error)
}

// Config holds the dashboard's dependencies: the hub's services.
type Config struct {
	Auth     *auth.Service
	Registry *registry.Service
	Twins    *twin.Service
	Query    *query.Service
	Jobs     *job.Service
	Methods  Invoker
	Events   *events.Stream
	// Connected counts the devices connected now.
	Connected func() int64
	// DeviceGateway returns the GatewayHostName device connection strings
	// need when the hub's MQTT is not on 8883 ("" when it is); nil: none.
	DeviceGateway func() string
	// SessionTTL is how long a sign-in lasts (0: DefaultSessionTTL).
	SessionTTL time.Duration
	Log        *slog.Logger
	Now        func() time.Time
}

// DefaultSessionTTL is how long a sign-in lasts.
const DefaultSessionTTL = 8 * time.Hour

// Page sizes: no page loads or renders more rows than these.
const (
	devicePage    = 50
	jobPage       = 25
	deviceJobPage = 50
)

// Server is the dashboard.
type Server struct {
	cfg      Config
	mux      *http.ServeMux
	pages    map[string]*template.Template
	sessions *sessions
	origin   *http.CrossOriginProtection
	macKey   []byte // signs previewed job bodies
}

// New returns the dashboard.
func New(cfg Config) (*Server, error) {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), sessions: newSessions(cfg.Now, cfg.SessionTTL),
		origin: http.NewCrossOriginProtection(), macKey: make([]byte, 32)}
	_, _ = rand.Read(s.macKey)
	s.origin.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusForbidden, "This request came from another site and was refused (cross-site request forgery protection).")
	}))
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// Handler serves the dashboard under Prefix.
func (s *Server) Handler() http.Handler { return s.headers(s.origin.Handler(s.mux)) }

// RedirectRoot sends a browser asking for the bare host ("GET /" with an
// Accept that names HTML) to the dashboard and reports whether it did;
// API clients are left to the REST API.
func RedirectRoot(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != "/" || (r.Method != http.MethodGet && r.Method != http.MethodHead) ||
		!strings.Contains(r.Header.Get("Accept"), "text/html") {
		return false
	}
	http.Redirect(w, r, Prefix, http.StatusFound)
	return true
}

func (s *Server) routes() {
	read := auth.RegistryRead | auth.RegistryWrite
	write := auth.RegistryWrite
	svc := auth.ServiceConnect
	anyService := read | svc
	static, _ := fs.Sub(staticFS, "static")
	s.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(static)))
	s.mux.HandleFunc("GET /ui/login", s.loginPage)
	s.mux.HandleFunc("POST /ui/login", s.login)
	s.mux.HandleFunc("POST /ui/logout", s.post(0, s.logout))
	s.mux.HandleFunc("GET /ui/{$}", s.page(anyService, s.home))
	// Devices: the twin query, as POST /devices/query; identities as
	// /devices/{id}; twins as /twins/{id}; methods as /twins/{id}/methods.
	s.mux.HandleFunc("GET /ui/devices", s.page(anyService, s.devices))
	s.mux.HandleFunc("POST /ui/selection", s.post(anyService, s.selection))
	s.mux.HandleFunc("GET /ui/devices/{id}", s.page(anyService, s.device))
	s.mux.HandleFunc("POST /ui/devices/{id}/keys", s.post(read, s.revealKeys))
	s.mux.HandleFunc("POST /ui/devices/{id}/status", s.post(write, s.setStatus))
	s.mux.HandleFunc("POST /ui/devices/{id}/regenerate", s.post(write, s.regenerate))
	s.mux.HandleFunc("POST /ui/devices/{id}/twin", s.post(svc, s.editTwin))
	s.mux.HandleFunc("POST /ui/devices/{id}/method", s.post(svc, s.invoke))
	s.mux.HandleFunc("GET /ui/devices/{id}/telemetry", s.page(svc, s.deviceTelemetry))
	s.mux.HandleFunc("GET /ui/devices/{id}/modules/{mid}", s.page(anyService, s.module))
	s.mux.HandleFunc("POST /ui/devices/{id}/modules/{mid}/method", s.post(svc, s.invokeModule))
	s.mux.HandleFunc("POST /ui/devices/{id}/modules/{mid}/twin", s.post(svc, s.editModuleTwin))
	// Jobs, as /jobs/v2: creating needs the rights of the job's kind
	// (checked again by the job service with httpapi.JobRights).
	s.mux.HandleFunc("GET /ui/jobs", s.page(anyService, s.jobs))
	s.mux.HandleFunc("GET /ui/jobs/new", s.page(write|svc, s.newJob))
	s.mux.HandleFunc("POST /ui/jobs/preview", s.post(write|svc, s.previewJob))
	s.mux.HandleFunc("POST /ui/jobs", s.post(write|svc, s.createJob))
	s.mux.HandleFunc("GET /ui/jobs/{id}", s.page(anyService, s.job))
	s.mux.HandleFunc("POST /ui/jobs/{id}/cancel", s.post(write|svc, s.cancelJob))
	s.mux.HandleFunc("POST /ui/jobs/{id}/pause", s.post(write|svc, s.pauseJob))
	s.mux.HandleFunc("POST /ui/jobs/{id}/resume", s.post(write|svc, s.resumeJob))
	s.mux.HandleFunc("GET /ui/jobs/{id}/events", s.page(anyService, s.jobEvents))
	// Monitor, as GET /events.
	s.mux.HandleFunc("GET /ui/monitor", s.page(svc, s.monitor))
	s.mux.HandleFunc("GET /ui/monitor/events", s.page(svc, s.monitorEvents))
	s.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "There is no such page.")
	})
}

// csp is the Content-Security-Policy of every dashboard response: only
// this origin's files, no inline script or style, no framing, forms post
// only here.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// headers sets the security headers of every dashboard response.
func (s *Server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
			h.Set("Cache-Control", "no-store") // pages may show keys
		}
		next.ServeHTTP(w, r)
	})
}

func staticHandler(files fs.FS) http.Handler {
	h := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no listings
			return
		}
		w.Header().Set("Cache-Control", "max-age=300")
		h.ServeHTTP(w, r)
	})
}

// handlerFunc is a dashboard handler: it has the caller's session.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c *call) error

// call is one request of a signed-in operator.
type call struct {
	sess   *session
	policy auth.Policy
}

// page wraps a GET handler: the caller must be signed in (else they are
// sent to the sign-in page) and their policy must have one of need.
func (s *Server) page(need auth.Rights, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.signedIn(r)
		if !ok {
			http.Redirect(w, r, "/ui/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		s.run(w, r, c, need, h)
	}
}

// post wraps a form POST: signed in, the session's CSRF token in the form
// (cross-origin requests are already refused by the CrossOriginProtection
// in front of every route), and one of need.
func (s *Server) post(need auth.Rights, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		c, ok := s.signedIn(r)
		if !ok {
			s.fail(w, r, http.StatusUnauthorized, "You are not signed in (or your session ended). Sign in again.")
			return
		}
		if !c.sess.checkCSRF(r.PostFormValue("csrf")) {
			s.fail(w, r, http.StatusForbidden, "The form's security token is missing or stale. Reload the page and try again.")
			return
		}
		s.run(w, r, c, need, h)
	}
}

// maxForm bounds a form body: a method payload or a twin section of the
// twin limits, and some more.
const maxForm = 512 << 10

func (s *Server) run(w http.ResponseWriter, r *http.Request, c *call, need auth.Rights, h handlerFunc) {
	if need != 0 {
		if err := c.policy.Require(need, "this page"); err != nil {
			s.fail(w, r, http.StatusForbidden, herd.ErrorMessage(err))
			return
		}
	}
	if err := h(w, r, c); err != nil {
		s.failErr(w, r, c, err)
	}
}

// failErr answers a handler's error: a herd error with its message and
// status, anything else as an internal error (logged with its detail).
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, c *call, err error) {
	var he *herd.Error
	if !errors.As(err, &he) || he.Code == herd.ErrInternal {
		s.cfg.Log.Error("dashboard request failed", "op", r.Method+" "+r.URL.Path, "err", err)
		s.fail(w, r, http.StatusInternalServerError, "Something went wrong on the hub; the log says what.")
		return
	}
	status := statusOf(he.Code)
	s.fail(w, r, status, he.Message)
}

// statusOf is the HTTP status of a herd error code in the dashboard: 403
// for a right the policy lacks (the REST API says 401, as Azure does),
// otherwise as the REST API answers.
func statusOf(code herd.ErrorCode) int {
	switch code {
	case herd.ErrUnauthorized:
		return http.StatusForbidden
	case herd.ErrDeviceNotFound, herd.ErrModuleNotFound, herd.ErrJobNotFound, herd.ErrNotFound, herd.ErrDeviceNotOnline:
		return http.StatusNotFound
	case herd.ErrPreconditionFailed:
		return http.StatusPreconditionFailed
	case herd.ErrGatewayTimeout:
		return http.StatusGatewayTimeout
	case herd.ErrDeviceAlreadyExists, herd.ErrJobAlreadyExists:
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// fail renders the error page with a status.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c, _ := s.signedIn(r)
	d := s.data(r, c, "Error")
	d.Error = msg
	s.render(w, status, "error", d)
}

// pageData is what every page template gets.
type pageData struct {
	Title  string
	Hub    string
	Path   string
	Policy string
	rights auth.Rights
	CSRF   string
	Flash  string
	Error  string
	// Body is the page's own data.
	Body any
}

// Can reports whether the session's policy has one of the named rights
// (RegistryRead, RegistryWrite, ServiceConnect), for templates that show a
// control only to those who may use it. The server checks again.
func (d *pageData) Can(names ...string) bool {
	for _, n := range names {
		switch n {
		case "RegistryRead":
			if d.rights.Any(auth.RegistryRead) {
				return true
			}
		case "RegistryWrite":
			if d.rights.Any(auth.RegistryWrite) {
				return true
			}
		case "ServiceConnect":
			if d.rights.Any(auth.ServiceConnect) {
				return true
			}
		}
	}
	return false
}

func (s *Server) data(r *http.Request, c *call, title string) *pageData {
	d := &pageData{Title: title, Hub: s.cfg.Auth.Host(), Path: r.URL.Path}
	if c != nil {
		d.Policy, d.rights, d.CSRF = c.policy.Name, c.policy.Rights, c.sess.csrf
		d.Flash = c.sess.takeFlash()
	}
	return d
}

// render executes a page template into a buffer first, so that a
// template error is an error page and not half a page.
func (s *Server) render(w http.ResponseWriter, status int, page string, d *pageData) {
	t, ok := s.pages[page]
	if !ok {
		http.Error(w, "no template "+page, http.StatusInternalServerError)
		return
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", d); err != nil {
		s.cfg.Log.Error("render dashboard page", "op", page, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// redirect answers a successful POST (Post/Redirect/Get), with a notice
// for the next page.
func (s *Server) redirect(w http.ResponseWriter, r *http.Request, c *call, to, flash string) {
	if flash != "" {
		c.sess.setFlash(flash)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func (s *Server) parseTemplates() error {
	base, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return fmt.Errorf("parse dashboard layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	s.pages = map[string]*template.Template{}
	for _, n := range names {
		page := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if page == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return fmt.Errorf("parse dashboard page %s: %w", page, err)
		}
		s.pages[page] = t
	}
	return nil
}
