//go:build unix

package hub_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// childLimit is the open-file limit of the hub under test.
const childLimit = 256

// childEnv, when set, makes the test binary the hub under test; its value
// is the data folder.
const childEnv = "HERD_TEST_FILE_LIMIT_HUB"

// childReady is what the child prints once the hub is serving.
type childReady struct {
	HTTPS, MQTT, ConnectionString string
}

// TestOpenFileLimit floods a hub whose open-file limit is 256 with more
// idle TCP connections than that on its MQTT port. The hub must stay up:
// the REST API answers during the flood, the sockets over the connection
// bound are refused and counted, and once the idle sockets close a device
// connects. (Without the bound, accept failed with EMFILE and the whole
// hub stopped.) The hub runs in a child process, the test binary itself,
// which lowers its RLIMIT_NOFILE before it starts the hub.
func TestOpenFileLimit(t *testing.T) {
	if dir := os.Getenv(childEnv); dir != "" {
		runLimitedHub(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("runs a hub in a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenFileLimit$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the child has exited, with its error in waitErr.
	exited := make(chan struct{})
	var waitErr error
	readyc := make(chan childReady, 1)
	var out syncBuffer
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				var r childReady
				if json.Unmarshal([]byte(line), &r) == nil {
					readyc <- r
				}
				continue
			}
			fmt.Fprintln(&out, sc.Text())
		}
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	output := func() string { return out.String() + stderr.String() }
	var ready childReady
	select {
	case ready = <-readyc:
	case <-exited:
		t.Fatalf("the hub exited before it was ready (%v):\n%s", waitErr, output())
	case <-time.After(60 * time.Second):
		t.Fatalf("the hub was not ready within 60 s:\n%s", output())
	}
	alive := func(when string) {
		t.Helper()
		select {
		case <-exited:
			t.Fatalf("%s: the hub exited (%v):\n%s", when, waitErr, output())
		default:
		}
	}

	// The flood: idle TCP connections (no TLS handshake, no CONNECT) to
	// MQTT over TLS. Each records when the hub closes it.
	const flood = 2 * childLimit
	var closed atomic.Int64
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.Dial("tcp", ready.MQTT)
		if err != nil {
			t.Fatalf("idle socket %d: %v (the hub stopped listening?)\n%s", len(idle), err, output())
		}
		idle = append(idle, c)
		go func() {
			_, _ = io.Copy(io.Discard, c)
			closed.Add(1)
		}()
	}
	// The hub can hold fewer than childLimit of them: it has dealt with the
	// flood once at least flood - childLimit are closed.
	eventually(t, 60*time.Second, func() bool { return closed.Load() >= flood-childLimit },
		func() string { return fmt.Sprintf("the hub closed %d of %d idle sockets", closed.Load(), flood) })
	alive("after the flood")

	// The REST API answers while the idle sockets are still open.
	ca := filepath.Join(dir, certs.CAFile)
	svc, err := service.New(ready.ConnectionString, service.WithCAFile(ca), service.WithEndpoint("https://"+ready.HTTPS))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := svc.CreateDevice(ctx, herd.Device{DeviceID: "dev1"})
	if err != nil {
		t.Fatalf("REST during the flood: %v\n%s", err, output())
	}
	if n := metric(t, ca, ready.HTTPS, "herd_mqtt_over_capacity_total"); n < flood-childLimit {
		t.Errorf("herd_mqtt_over_capacity_total = %v, want at least %d", n, flood-childLimit)
	}

	// Once the idle sockets close, a device connects.
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	var code byte
	eventually(t, 30*time.Second, func() bool {
		code = connectDevice(t, ready.MQTT, ca, d)
		return code == packets.Accepted
	}, func() string {
		return fmt.Sprintf("the device was not accepted after the flood (last CONNACK %d)", code)
	})
	alive("after the device connected")

	// And the hub still stops cleanly.
	stdin.Close()
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("the hub exited with %v:\n%s", waitErr, output())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the hub did not stop")
	}
}

// runLimitedHub is the child: it lowers its open-file limit, starts a hub
// with the default configuration on dir, prints childReady and serves
// until its stdin closes.
func runLimitedHub(t *testing.T, dir string) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	rl.Cur = childLimit
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	cfg := hub.Default() // reads the lowered limit
	cfg.DataDir = dir
	cfg.HTTPSAddr = "127.0.0.1:0"
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.MetricsPublic = true
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var err error
	if cfg.Store, err = store.Open(ctx, "", dir); err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := h.ConnectionString("iothubowner")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(childReady{HTTPS: h.HTTPSAddr().String(), MQTT: h.MQTTAddr().String(), ConnectionString: cs})
	fmt.Printf("READY %s\n", b)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := h.Run(ctx); err != nil {
		t.Fatalf("hub stopped: %v", err)
	}
}

// connectDevice connects d over MQTT/TLS and returns the CONNACK code, or
// 255 when the hub closed the connection without one.
func connectDevice(t *testing.T, addr, caFile string, d *herd.Device) byte {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		return 255
	}
	defer nc.Close()
	tok, err := sas.DeviceToken("localhost", d.DeviceID, "", d.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion, cp.ClientIdentifier, cp.CleanSession, cp.Keepalive = "MQTT", 4, d.DeviceID, true, 60
	cp.UsernameFlag, cp.Username = true, "localhost/"+d.DeviceID+"/?api-version=2021-04-12"
	cp.PasswordFlag, cp.Password = true, []byte(tok)
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := cp.Write(nc); err != nil {
		return 255
	}
	p, err := packets.ReadPacket(nc)
	if err != nil {
		return 255
	}
	ack, ok := p.(*packets.ConnackPacket)
	if !ok {
		t.Fatalf("expected CONNACK, got %s", p)
	}
	return ack.ReturnCode
}

// metric reads one unlabelled sample from the hub's public /metrics.
func metric(t *testing.T, caFile, addr, name string) float64 {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	res, err := hc.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// eventually polls cond until it is true or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %s", timeout, what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
