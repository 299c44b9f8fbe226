package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/sas"
)

// CookieName is the session cookie. The __Host- prefix makes browsers
// accept it only when it is Secure, for this host alone and for path /.
const CookieName = "__Host-herd-session"

// maxSessions bounds the sessions kept; the oldest go first.
const maxSessions = 10000

// session is one signed-in operator, kept in the hub's memory only: the
// cookie holds its random id, never the policy's key. A hub restart ends
// every session.
type session struct {
	id      string
	policy  string
	keyHash [32]byte // SHA-256 of the key that signed in
	csrf    string
	expires time.Time

	mu        sync.Mutex
	flash     string
	selection map[string]struct{}
}

// sessions are the live sessions by id.
type sessions struct {
	now func() time.Time
	ttl time.Duration

	mu   sync.Mutex
	byID map[string]*session
}

func newSessions(now func() time.Time, ttl time.Duration) *sessions {
	return &sessions{now: now, ttl: ttl, byID: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for a policy signed in with key.
func (ss *sessions) create(policy, key string) *session {
	now := ss.now()
	sess := &session{id: randomToken(), policy: policy, keyHash: sha256.Sum256([]byte(key)),
		csrf: randomToken(), expires: now.Add(ss.ttl), selection: map[string]struct{}{}}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.byID) >= maxSessions {
		var oldest *session
		for id, o := range ss.byID {
			if !now.Before(o.expires) {
				delete(ss.byID, id)
			} else if oldest == nil || o.expires.Before(oldest.expires) {
				oldest = o
			}
		}
		if len(ss.byID) >= maxSessions && oldest != nil {
			delete(ss.byID, oldest.id)
		}
	}
	ss.byID[sess.id] = sess
	return sess
}

func (ss *sessions) get(id string) (*session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sess, ok := ss.byID[id]
	if ok && !ss.now().Before(sess.expires) {
		delete(ss.byID, id)
		return nil, false
	}
	return sess, ok
}

func (ss *sessions) delete(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, id)
}

func (sess *session) checkCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(sess.csrf)) == 1
}

func (sess *session) setFlash(msg string) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.flash = msg
}

func (sess *session) takeFlash() string {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	f := sess.flash
	sess.flash = ""
	return f
}

// maxSelection bounds the devices selected by hand across pages: a job
// over them has the condition deviceId IN [...], which must stay within
// the 8192 characters of a queryCondition. Larger sets are selected by
// their query.
const maxSelection = 200

// selected returns the selected device ids in order.
func (sess *session) selected() []string {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	ids := make([]string, 0, len(sess.selection))
	for id := range sess.selection {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// selectDevices adds (or removes) ids; it returns false when adding
// would pass maxSelection (nothing is added then).
func (sess *session) selectDevices(ids []string, add bool) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if !add {
		for _, id := range ids {
			delete(sess.selection, id)
		}
		return true
	}
	n := len(sess.selection)
	for _, id := range ids {
		if _, ok := sess.selection[id]; !ok {
			n++
		}
	}
	if n > maxSelection {
		return false
	}
	for _, id := range ids {
		sess.selection[id] = struct{}{}
	}
	return true
}

func (sess *session) clearSelection() {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.selection = map[string]struct{}{}
}

// signedIn returns the caller's session and current policy. A session
// whose policy is gone or whose key was replaced has ended.
func (s *Server) signedIn(r *http.Request) (*call, bool) {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return nil, false
	}
	sess, ok := s.sessions.get(ck.Value)
	if !ok {
		return nil, false
	}
	p, ok := s.cfg.Auth.Policy(sess.policy)
	if !ok || !(keyIs(sess.keyHash, p.PrimaryKey) || keyIs(sess.keyHash, p.SecondaryKey)) {
		s.sessions.delete(sess.id)
		return nil, false
	}
	return &call{sess: sess, policy: p}, true
}

func keyIs(hash [32]byte, key string) bool {
	h := sha256.Sum256([]byte(key))
	return key != "" && subtle.ConstantTimeCompare(h[:], hash[:]) == 1
}

// loginData is the sign-in page's.
type loginData struct {
	Next string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if c, ok := s.signedIn(r); ok {
		s.redirect(w, r, c, localNext(r.URL.Query().Get("next")), "")
		return
	}
	d := s.data(r, nil, "Sign in")
	d.Body = loginData{Next: localNext(r.URL.Query().Get("next"))}
	s.render(w, http.StatusOK, "login", d)
}

// login exchanges a service connection string for a session: the string
// is checked exactly as a REST request signed with it would be (a SAS
// token for this hub, signed with the key, verified by
// auth.Service.AuthorizeService, needing one of the service rights).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	next := localNext(r.PostFormValue("next"))
	p, key, err := s.verify(r.PostFormValue("connectionString"))
	if err != nil {
		d := s.data(r, nil, "Sign in")
		d.Error = err.Error()
		d.Body = loginData{Next: next}
		s.render(w, http.StatusUnauthorized, "login", d)
		return
	}
	sess := s.sessions.create(p.Name, key)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: sess.id, Path: "/", MaxAge: int(s.cfg.SessionTTL / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	s.cfg.Log.Info("dashboard sign-in", "policy", p.Name, "op", "login")
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// loginError is a refusal the sign-in page shows.
type loginError string

func (e loginError) Error() string { return string(e) }

func (s *Server) verify(text string) (auth.Policy, string, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return auth.Policy{}, "", loginError("Paste a service connection string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…).")
	}
	cs, err := sas.ParseConnectionString(text)
	if err != nil {
		return auth.Policy{}, "", loginError("That is not a connection string: " + err.Error() + ".")
	}
	if cs.DeviceID != "" {
		return auth.Policy{}, "", loginError("That is a device connection string; sign in with a shared access policy's (iothubowner, service, registryRead, …).")
	}
	if err := cs.ForService(); err != nil {
		return auth.Policy{}, "", loginError("The connection string " + err.Error() + ".")
	}
	tok, err := sas.ServiceToken(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, s.cfg.Now().Add(5*time.Minute))
	if err != nil {
		return auth.Policy{}, "", loginError("The key is not valid base64.")
	}
	p, err := s.cfg.Auth.AuthorizeService(tok, auth.RegistryRead|auth.RegistryWrite|auth.ServiceConnect, "")
	if err != nil {
		return auth.Policy{}, "", loginError("Sign-in refused: " + herd.ErrorMessage(err) + ".")
	}
	return p, cs.SharedAccessKey, nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, c *call) error {
	s.sessions.delete(c.sess.id)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	return nil
}

// localNext keeps a post-sign-in destination inside the dashboard.
func localNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, Prefix) ||
		strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return Prefix
	}
	return u.RequestURI()
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
