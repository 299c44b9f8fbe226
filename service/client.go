// Package service is Herd's Go service SDK: what a back-end application
// uses to manage the device registry and twins, invoke direct methods, run
// twin queries and schedule jobs on a Herd hub (or on Azure IoT Hub, whose
// REST API Herd speaks).
//
// Every call signs a fresh SAS token with the connection string's policy.
// Failures the hub answers are *herd.Error values with the hub's error code
// and the HTTP status:
//
//	if herd.IsCode(err, herd.ErrDeviceNotFound) { … }
//
// A Client holds idle HTTP connections for reuse; Close releases them when
// the program is done with the hub.
package service

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sas"
)

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("service: client closed")

// Client calls a hub's REST API. Its methods are safe for concurrent use.
type Client struct {
	cs       sas.ConnectionString
	endpoint string
	http     *http.Client
	ownHTTP  bool // http was made by New, so Close may close its connections
	roots    *x509.CertPool
	now      func() time.Time
	closed   atomic.Bool
}

// Option configures a Client.
type Option func(*Client) error

// WithCA trusts the PEM certificates in pemCerts (for example a Herd hub's
// ca.pem) in addition to the system's roots.
func WithCA(pemCerts []byte) Option {
	return func(c *Client) error {
		if c.roots == nil {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			c.roots = pool
		}
		if !c.roots.AppendCertsFromPEM(pemCerts) {
			return fmt.Errorf("no PEM certificate found in the CA")
		}
		return nil
	}
}

// WithCAFile is WithCA with the certificates read from a file.
func WithCAFile(path string) Option {
	return func(c *Client) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read CA: %w", err)
		}
		return WithCA(b)(c)
	}
}

// WithEndpoint sends requests to base (such as "https://localhost:8443")
// instead of https://{HostName}; tokens still name HostName.
func WithEndpoint(base string) Option {
	return func(c *Client) error {
		u, err := url.Parse(base)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("endpoint %q is not an absolute URL", base)
		}
		c.endpoint = strings.TrimSuffix(base, "/")
		return nil
	}
}

// WithHTTPClient uses hc for requests (its transport decides TLS; WithCA is
// ignored).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error { c.http = hc; return nil }
}

// New returns a client for the hub named by a service connection string
// (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…).
func New(connectionString string, opts ...Option) (*Client, error) {
	cs, err := sas.ParseConnectionString(connectionString)
	if err != nil {
		return nil, err
	}
	if err := cs.ForService(); err != nil {
		return nil, err
	}
	c := &Client{cs: cs, endpoint: "https://" + cs.HostName, now: time.Now}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12}
		tr.MaxIdleConnsPerHost = 64
		c.http = &http.Client{Transport: tr}
		c.ownHTTP = true
	}
	return c, nil
}

// Close releases the client's idle HTTP connections, and calls made after
// it fail with ErrClosed. Calls already running are not interrupted (cancel
// their contexts to stop them, MonitorEvents included); their connections
// are closed as they finish rather than kept for reuse. The connections of
// an http.Client given with WithHTTPClient belong to the caller and are
// left open. Close may be called more than once; it always returns nil.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.release()
	return nil
}

// release closes the idle connections of a closed client.
func (c *Client) release() {
	if c.closed.Load() && c.ownHTTP {
		c.http.CloseIdleConnections()
	}
}

// send performs an HTTP request unless the client is closed. The caller
// closes the reply's body and then calls release.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	return c.http.Do(req)
}

// HostName returns the hub's host name from the connection string.
func (c *Client) HostName() string { return c.cs.HostName }

// request is one REST call.
type request struct {
	method string
	path   string // already escaped
	query  url.Values
	header http.Header
	body   any // JSON-encoded unless []byte
	out    any // decoded from a 2xx reply, if not nil
	accept func(status int) bool
}

// do performs a call and returns the reply's headers.
func (c *Client) do(ctx context.Context, r request) (http.Header, error) {
	q := r.query
	if q == nil {
		q = url.Values{}
	}
	q.Set("api-version", herd.APIVersion)
	var body io.Reader
	if r.body != nil {
		b, ok := r.body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(r.body); err != nil {
				return nil, fmt.Errorf("encode request: %w", err)
			}
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.endpoint+r.path+"?"+q.Encode(), body)
	if err != nil {
		return nil, err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	tok, err := sas.ServiceToken(c.cs.HostName, c.cs.SharedAccessKeyName, c.cs.SharedAccessKey, c.now().Add(time.Hour))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", tok)
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer c.release() // after the body is closed and its connection idle
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read reply: %w", r.method, r.path, err)
	}
	ok := resp.StatusCode < 300
	if r.accept != nil {
		ok = r.accept(resp.StatusCode)
	}
	if !ok {
		return resp.Header, parseError(resp, data)
	}
	if r.out != nil && len(data) > 0 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(r.out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: decode reply: %w", r.method, r.path, err)
		}
	}
	return resp.Header, nil
}

// parseError turns an Azure error reply into a *herd.Error that keeps the
// HTTP status.
func parseError(resp *http.Response, data []byte) error {
	msg := strings.TrimSpace(string(data))
	var body struct{ Message string }
	if json.Unmarshal(data, &body) == nil && body.Message != "" {
		msg = body.Message
	}
	if msg == "" {
		msg = resp.Status
	}
	return errorFromMessage(resp.Header, resp.StatusCode, msg)
}

// errorFromMessage builds a *herd.Error from an error reply: the code from
// the iothub-errorcode header (or the Message, or the status), the text
// from the Message ("ErrorCode:<Name>;<text>", or Azure's nested JSON form
// for direct methods).
func errorFromMessage(h http.Header, status int, message string) error {
	code := herd.ErrorCode(h.Get("iothub-errorcode"))
	msg := message
	var nested struct {
		Message string `json:"message"`
	}
	if rest, ok := strings.CutPrefix(message, "ErrorCode:"); ok {
		if name, text, ok := strings.Cut(rest, ";"); ok {
			msg = text
			if code == "" {
				code = herd.ErrorCode(name)
			}
		}
	} else if json.Unmarshal([]byte(message), &nested) == nil && nested.Message != "" {
		msg = nested.Message
	}
	if code == "" {
		code = codeForStatus(status)
	}
	return &herd.Error{Code: code, Message: msg, Status: status}
}

func codeForStatus(status int) herd.ErrorCode {
	switch status {
	case http.StatusBadRequest:
		return herd.ErrArgumentInvalid
	case http.StatusUnauthorized, http.StatusForbidden:
		return herd.ErrUnauthorized
	case http.StatusNotFound:
		return herd.ErrNotFound
	case http.StatusConflict:
		return herd.ErrDeviceAlreadyExists
	case http.StatusPreconditionFailed:
		return herd.ErrPreconditionFailed
	case http.StatusRequestEntityTooLarge:
		return herd.ErrMessageTooLarge
	case http.StatusTooManyRequests:
		return herd.ErrThrottling
	case http.StatusServiceUnavailable:
		return herd.ErrServiceUnavailable
	case http.StatusGatewayTimeout:
		return herd.ErrGatewayTimeout
	}
	return herd.ErrInternal
}

// quoteETag returns an If-Match value: "*" for an empty etag.
func quoteETag(etag string) string {
	if etag == "" || etag == "*" {
		return `"*"`
	}
	if strings.HasPrefix(etag, `"`) {
		return etag
	}
	return `"` + etag + `"`
}

func ifMatch(etag string) http.Header {
	return http.Header{"If-Match": {quoteETag(etag)}}
}
