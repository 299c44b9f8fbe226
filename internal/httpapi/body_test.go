package httpapi_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
)

// sendHeaders opens a TLS connection to the hub and sends a request's
// headers announcing a body of n bytes that never comes.
func sendHeaders(t *testing.T, h *hubtest.Hub, method, path, token string, n int) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	c, err := tls.Dial("tcp", strings.TrimPrefix(h.URL, "https://"), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", method, path, n)
	if token != "" {
		req += "Authorization: " + token + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	// Generous: the hub answers in milliseconds (or after the body
	// timeout); without a fix it never answers and this read times out.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

// expectAnswerAndClose reads one response and then the end of the
// connection.
func expectAnswerAndClose(t *testing.T, rd *bufio.Reader, status int) {
	t.Helper()
	// The connection's read deadline (sendHeaders) bounds both reads.
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if _, err := rd.ReadByte(); err != io.EOF {
		t.Errorf("the connection stays open after the answer (read: %v)", err)
	}
}

// TestBodyThatNeverArrives: a request whose body never comes is answered
// and its connection closed — at once when the request is refused anyway
// (no token), after the body timeout when it is authorized.
func TestBodyThatNeverArrives(t *testing.T) {
	h := hubtest.Start(t, hubtest.WithConfig(func(c *hub.Config) { c.HTTPBodyTimeout = 300 * time.Millisecond }))
	r := newRaw(t, h)
	t.Run("no token", func(t *testing.T) {
		_, rd := sendHeaders(t, h, "PUT", "/devices/held"+v, "", 100)
		expectAnswerAndClose(t, rd, 401)
	})
	t.Run("read-only token writing", func(t *testing.T) {
		_, rd := sendHeaders(t, h, "PUT", "/devices/held"+v, r.token("registryRead"), 100)
		expectAnswerAndClose(t, rd, 401)
	})
	t.Run("unknown route", func(t *testing.T) {
		_, rd := sendHeaders(t, h, "POST", "/nothing/here"+v, "", 100)
		expectAnswerAndClose(t, rd, 404)
	})
	t.Run("authorized", func(t *testing.T) {
		_, rd := sendHeaders(t, h, "PUT", "/devices/held"+v, r.token("iothubowner"), 100)
		expectAnswerAndClose(t, rd, 400)
	})
	t.Run("partial body", func(t *testing.T) {
		c, rd := sendHeaders(t, h, "PATCH", "/twins/held"+v, r.token("iothubowner"), 100)
		io.WriteString(c, `{"tags":`)
		expectAnswerAndClose(t, rd, 400)
	})
	// Nothing was written, and a request whose body comes is served as
	// before, also when the handler outlives the body timeout.
	if resp, body := r.do("GET", "/devices/held"+v, "", nil); resp.StatusCode != 404 {
		t.Errorf("held requests wrote a device: %d %s", resp.StatusCode, body)
	}
	if resp, body := r.do("PUT", "/devices/ok"+v, `{"deviceId":"ok"}`, nil); resp.StatusCode != 200 {
		t.Errorf("a whole request: %d %s", resp.StatusCode, body)
	}
	start := time.Now()
	resp, body := r.do("POST", "/twins/ok/methods"+v, `{"methodName":"m","responseTimeoutInSeconds":5,"connectTimeoutInSeconds":1}`, nil)
	if resp.StatusCode != 404 || !strings.Contains(string(body), "404103") {
		t.Errorf("a method call that waits past the body timeout: %d %s (after %v)", resp.StatusCode, body, time.Since(start))
	}
}
