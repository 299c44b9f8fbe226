package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/hubtest"
)

// X.509 device authentication (§1.4, §8.2): the client certificate of the
// TLS handshake, checked at CONNECT against the registry (selfSigned
// thumbprints, or a chain to a verified CA certificate with the device id
// as common name) and the hub's clock.

// certOf makes a tls.Certificate of an issued certificate, with its
// chain (intermediates) after it.
func certOf(t testing.TB, iss *certs.Issued, chain ...*x509.Certificate) *tls.Certificate {
	t.Helper()
	c, err := iss.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range chain {
		c.Certificate = append(c.Certificate, ca.Raw)
	}
	return &c
}

func selfSigned(t testing.TB, cn string, notBefore time.Time, validity time.Duration) *certs.Issued {
	t.Helper()
	iss, err := certs.SelfSigned(certs.Spec{CommonName: cn, NotBefore: notBefore, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func issue(t testing.TB, ca *certs.Issuer, cn string, notBefore time.Time, validity time.Duration) *certs.Issued {
	t.Helper()
	iss, err := ca.Issue(certs.Spec{CommonName: cn, NotBefore: notBefore, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func newCA(t testing.TB, cn string) *certs.Issuer {
	t.Helper()
	ca, _, err := certs.NewCA(certs.Spec{CommonName: cn, NotBefore: time.Now().Add(-time.Hour), Validity: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// dialTLSCert dials MQTT over TLS presenting cert (nil: none).
func dialTLSCert(t testing.TB, h *hubtest.Hub, cert *tls.Certificate) *rawClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	nc, err := tls.Dial("tcp", h.MQTTAddr, cfg)
	if err != nil {
		t.Fatalf("dial TLS: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// dialWSCert opens MQTT over WebSocket presenting cert in the HTTPS
// handshake, as the Node SDK's MqttWs does with setOptions({cert, key}).
func dialWSCert(t testing.TB, h *hubtest.Hub, cert *tls.Certificate) *rawClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "wss://" + strings.Replace(h.HTTPSAddr().String(), "127.0.0.1", "localhost", 1) + "/$iothub/websocket"
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"mqtt"}})
	if err != nil {
		t.Fatalf("dial WebSocket: %v", err)
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// x509Device registers a device with the given authentication.
func x509Device(t testing.TB, h *hubtest.Hub, id string, a herd.Authentication) device {
	t.Helper()
	if _, err := h.Service.CreateDevice(context.Background(), herd.Device{DeviceID: id, Authentication: a}); err != nil {
		t.Fatalf("create device %q: %v", id, err)
	}
	return device{id: id, h: h}
}

func thumbs(primary, secondary string) herd.Authentication {
	a := herd.Authentication{Type: herd.AuthSelfSigned, X509Thumbprint: herd.X509Thumbprint{PrimaryThumbprint: &primary}}
	if secondary != "" {
		a.X509Thumbprint.SecondaryThumbprint = &secondary
	}
	return a
}

var caAuth = herd.Authentication{Type: herd.AuthCertificateAuthority}

// x509Connect sends an X.509 device's CONNECT: no password, as the SDKs
// send it.
func (c *rawClient) x509Connect(d device) *packets.ConnackPacket {
	c.t.Helper()
	return c.connectWith(connectPacket(d.id, d.username(), "", false))
}

func expectRefused(t testing.TB, c *rawClient, ack *packets.ConnackPacket) {
	t.Helper()
	if ack.ReturnCode != packets.ErrRefusedNotAuthorised {
		t.Fatalf("CONNACK %d, want 5 (not authorized)", ack.ReturnCode)
	}
	c.expectClosed()
}

func expectAccepted(t testing.TB, c *rawClient, ack *packets.ConnackPacket) {
	t.Helper()
	if ack.ReturnCode != packets.Accepted {
		t.Fatalf("CONNACK %d, want 0", ack.ReturnCode)
	}
	c.ping()
}

func TestX509SelfSigned(t *testing.T) {
	h := hubtest.Start(t)
	now := time.Now()
	a, b := selfSigned(t, "a", now.Add(-time.Hour), 24*time.Hour), selfSigned(t, "b", now.Add(-time.Hour), 24*time.Hour)
	a1, _ := certs.Thumbprints(a.Cert)
	_, b256 := certs.Thumbprints(b.Cert)
	// The primary as SHA-1 in upper case, the secondary as SHA-256 in
	// lower case: Azure takes either digest, in either case.
	d := x509Device(t, h, "ss", thumbs(a1, strings.ToLower(b256)))
	expired := selfSigned(t, "old", now.Add(-48*time.Hour), 24*time.Hour)
	future := selfSigned(t, "new", now.Add(24*time.Hour), 24*time.Hour)
	e1, _ := certs.Thumbprints(expired.Cert)
	f1, _ := certs.Thumbprints(future.Cert)
	de := x509Device(t, h, "ss-expired", thumbs(e1, ""))
	df := x509Device(t, h, "ss-future", thumbs(f1, ""))

	t.Run("primary thumbprint (SHA-1)", func(t *testing.T) {
		c := dialTLSCert(t, h, certOf(t, a))
		expectAccepted(t, c, c.x509Connect(d))
	})
	t.Run("secondary thumbprint (SHA-256, lower case)", func(t *testing.T) {
		c := dialTLSCert(t, h, certOf(t, b))
		expectAccepted(t, c, c.x509Connect(d))
	})
	t.Run("a password is ignored", func(t *testing.T) {
		c := dialTLSCert(t, h, certOf(t, a))
		expectAccepted(t, c, c.connectWith(connectPacket(d.id, d.username(), "SharedAccessSignature sr=x&sig=y&se=1", false)))
	})
	refusals := []struct {
		name string
		d    device
		cert *tls.Certificate
	}{
		{"another certificate", d, certOf(t, selfSigned(t, "ss", now.Add(-time.Hour), 24*time.Hour))},
		{"no certificate", d, nil},
		{"expired", de, certOf(t, expired)},
		{"not yet valid", df, certOf(t, future)},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTLSCert(t, h, tc.cert)
			expectRefused(t, c, c.x509Connect(tc.d))
		})
	}
	t.Run("a SAS token instead of a certificate", func(t *testing.T) {
		sasDev := newDevice(t, h, "sas-key-holder")
		forged := device{id: d.id, key: sasDev.key, h: h}
		c := dialTLSCert(t, h, nil)
		expectRefused(t, c, c.connectWith(connectPacket(d.id, d.username(), forged.token(now.Add(time.Hour)), false)))
	})
	t.Run("plain MQTT has no certificate", func(t *testing.T) {
		c := dialPlain(t, h)
		expectRefused(t, c, c.x509Connect(d))
	})
}

// verifyCA registers ca as name and proves possession of its key.
func verifyCA(t testing.TB, h *hubtest.Hub, name string, ca *certs.Issuer) {
	t.Helper()
	ctx := context.Background()
	got, err := h.Service.CreateCACertificate(ctx, name, ca.PEM())
	if err != nil {
		t.Fatal(err)
	}
	proof := issue(t, ca, got.Properties.VerificationCode, time.Now().Add(-time.Hour), time.Hour*2)
	if _, err := h.Service.VerifyCACertificate(ctx, name, proof.CertPEM, got.ETag); err != nil {
		t.Fatal(err)
	}
}

func TestX509CertificateAuthority(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	now := time.Now()
	ca := newCA(t, "Fleet root")
	d := x509Device(t, h, "cadev", caAuth)
	leaf := certOf(t, issue(t, ca, d.id, now.Add(-time.Hour), 24*time.Hour))

	t.Run("unverified CA", func(t *testing.T) {
		reg, err := h.Service.CreateCACertificate(ctx, "fleet", ca.PEM())
		if err != nil {
			t.Fatal(err)
		}
		if reg.Properties.IsVerified || reg.Properties.VerificationCode == "" {
			t.Fatalf("registered %+v: want unverified with a verification code", reg.Properties)
		}
		c := dialTLSCert(t, h, leaf)
		expectRefused(t, c, c.x509Connect(d))
		// A proof signed by another key verifies nothing.
		other := newCA(t, "impostor")
		bad := issue(t, other, reg.Properties.VerificationCode, now.Add(-time.Hour), time.Hour*2)
		if _, err := h.Service.VerifyCACertificate(ctx, "fleet", bad.CertPEM, ""); !herd.IsCode(err, herd.ErrArgumentInvalid) {
			t.Fatalf("proof from another key: %v, want ArgumentInvalid", err)
		}
		proof := issue(t, ca, reg.Properties.VerificationCode, now.Add(-time.Hour), time.Hour*2)
		got, err := h.Service.VerifyCACertificate(ctx, "fleet", proof.CertPEM, reg.ETag)
		if err != nil || !got.Properties.IsVerified {
			t.Fatalf("verify: %+v, %v", got, err)
		}
	})
	t.Run("verified CA", func(t *testing.T) {
		c := dialTLSCert(t, h, leaf)
		expectAccepted(t, c, c.x509Connect(d))
	})
	t.Run("through an intermediate CA", func(t *testing.T) {
		inter, err := ca.Issue(certs.Spec{CommonName: "Fleet intermediate", CA: true, NotBefore: now.Add(-time.Hour), Validity: 48 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		key, err := certs.ParsePrivateKey(inter.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		sub := &certs.Issuer{Cert: inter.Cert, Key: key}
		di := x509Device(t, h, "cadev-inter", caAuth)
		c := dialTLSCert(t, h, certOf(t, issue(t, sub, di.id, now.Add(-time.Hour), 24*time.Hour), inter.Cert))
		expectAccepted(t, c, c.x509Connect(di))
	})
	refusals := []struct {
		name string
		d    device
		cert *tls.Certificate
	}{
		{"common name of another device", x509Device(t, h, "cadev-other", caAuth), leaf},
		{"expired", x509Device(t, h, "cadev-expired", caAuth), nil},
		{"not yet valid", x509Device(t, h, "cadev-future", caAuth), nil},
		{"unregistered CA", x509Device(t, h, "cadev-stranger", caAuth), nil},
		{"no certificate", d, nil},
		{"a server certificate", x509Device(t, h, "localhost", caAuth), nil},
	}
	refusals[1].cert = certOf(t, issue(t, ca, refusals[1].d.id, now.Add(-48*time.Hour), 24*time.Hour))
	refusals[2].cert = certOf(t, issue(t, ca, refusals[2].d.id, now.Add(time.Hour), 24*time.Hour))
	refusals[3].cert = certOf(t, issue(t, newCA(t, "stranger"), refusals[3].d.id, now.Add(-time.Hour), 24*time.Hour))
	// The hub's own TLS certificate is for servers, not devices, even if
	// its CA is registered: a device certificate must allow client
	// authentication.
	serverCert, err := tls.LoadX509KeyPair(h.Dir+"/server.pem", h.Dir+"/server-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	local, err := certs.LocalIssuer(h.Dir)
	if err != nil {
		t.Fatal(err)
	}
	verifyCA(t, h, "local", local)
	refusals[5].cert = &serverCert
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTLSCert(t, h, tc.cert)
			expectRefused(t, c, c.x509Connect(tc.d))
		})
	}
	t.Run("deleting the CA disconnects its devices", func(t *testing.T) {
		c := dialTLSCert(t, h, leaf)
		expectAccepted(t, c, c.x509Connect(d))
		if err := h.Service.DeleteCACertificate(ctx, "fleet", ""); err != nil {
			t.Fatal(err)
		}
		c.expectClosed()
		c2 := dialTLSCert(t, h, leaf)
		expectRefused(t, c2, c2.x509Connect(d))
	})
}

// X.509 over MQTT over WebSocket: the client certificate comes with the
// HTTPS handshake of the listener the REST API shares (§1.1).
func TestX509OverWebSocket(t *testing.T) {
	h := hubtest.Start(t)
	now := time.Now()
	a := selfSigned(t, "ws", now.Add(-time.Hour), 24*time.Hour)
	a1, _ := certs.Thumbprints(a.Cert)
	d := x509Device(t, h, "wsss", thumbs(a1, ""))
	c := dialWSCert(t, h, certOf(t, a))
	expectAccepted(t, c, c.x509Connect(d))
	c.subscribe("$iothub/methods/POST/#")
	done := invokeAsync(t, h, d.id, herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 30})
	answer(t, c, 200, `{"x509":true}`)
	if r := <-done; r.err != nil || r.res.Status != 200 {
		t.Fatalf("method over WebSocket with a certificate: %+v", r)
	}

	ca := newCA(t, "ws root")
	verifyCA(t, h, "wsroot", ca)
	dc := x509Device(t, h, "wsca", caAuth)
	c2 := dialWSCert(t, h, certOf(t, issue(t, ca, dc.id, now.Add(-time.Hour), 24*time.Hour)))
	expectAccepted(t, c2, c2.x509Connect(dc))

	wrong := dialWSCert(t, h, certOf(t, selfSigned(t, "ws", now.Add(-time.Hour), 24*time.Hour)))
	expectRefused(t, wrong, wrong.x509Connect(d))
	none := dialWSCert(t, h, nil)
	expectRefused(t, none, none.x509Connect(d))
}

// SAS devices are unaffected by the listeners asking for client
// certificates: with or without one, their token decides.
func TestSASUnaffectedByClientCertificates(t *testing.T) {
	h := hubtest.Start(t)
	now := time.Now()
	d := newDevice(t, h, "sasdev")
	other := newDevice(t, h, "sasother")
	cert := certOf(t, selfSigned(t, d.id, now.Add(-time.Hour), 24*time.Hour))
	for _, dial := range []struct {
		name string
		fn   func(testing.TB, *hubtest.Hub, *tls.Certificate) *rawClient
	}{{"TLS", dialTLSCert}, {"WebSocket", dialWSCert}} {
		for _, cc := range []*tls.Certificate{nil, cert} {
			c := dial.fn(t, h, cc)
			if ack := c.connect(d, true, now); ack.ReturnCode != 0 {
				t.Fatalf("%s: CONNACK %d", dial.name, ack.ReturnCode)
			}
			c.ping()
			c = dial.fn(t, h, cc)
			expectRefused(t, c, c.connectWith(connectPacket(d.id, d.username(), other.token(now.Add(time.Hour)), true)))
			c = dial.fn(t, h, cc)
			expectRefused(t, c, c.x509Connect(d)) // no token: a certificate does not stand in for it
		}
	}
	// The REST API answers clients that send no certificate, as before.
	if _, err := h.Service.RegistryStatistics(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestX509CertificateExpiryDisconnects(t *testing.T) {
	fake := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := hubtest.Start(t, hubtest.WithFakeClock(fake))
	cert := selfSigned(t, "short", fake.Now().Add(-time.Hour), time.Hour+time.Minute)
	s1, _ := certs.Thumbprints(cert.Cert)
	d := x509Device(t, h, "short", thumbs(s1, ""))
	c := dialTLSCert(t, h, certOf(t, cert))
	expectAccepted(t, c, c.x509Connect(d))
	fake.Advance(59 * time.Second)
	c.ping() // alive a second before the certificate's end
	fake.Advance(2 * time.Second)
	c.expectClosed()
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "device still connected")
	c2 := dialTLSCert(t, h, certOf(t, cert))
	expectRefused(t, c2, c2.x509Connect(d))
}

func TestX509RegistryChangesDisconnect(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	now := time.Now()
	a, b := selfSigned(t, "a", now.Add(-time.Hour), 24*time.Hour), selfSigned(t, "b", now.Add(-time.Hour), 24*time.Hour)
	a1, _ := certs.Thumbprints(a.Cert)
	b1, _ := certs.Thumbprints(b.Cert)
	update := func(id string, change func(*herd.Device)) {
		t.Helper()
		dev, err := h.Service.GetDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		change(dev)
		if _, err := h.Service.UpdateDevice(ctx, *dev, "*"); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("the other thumbprint changed", func(t *testing.T) {
		d := x509Device(t, h, "keep", thumbs(a1, ""))
		c := dialTLSCert(t, h, certOf(t, a))
		expectAccepted(t, c, c.x509Connect(d))
		update(d.id, func(dev *herd.Device) { dev.Authentication.X509Thumbprint.SecondaryThumbprint = &b1 })
		hubtest.Eventually(t, 5*time.Second, func() bool {
			k, err := h.Registry.Keys(ctx, d.id)
			return err == nil && k.SecondaryThumbprint == b1
		}, "keys not reloaded")
		c.ping()
	})
	t.Run("its thumbprint replaced", func(t *testing.T) {
		d := x509Device(t, h, "rethumb", thumbs(a1, ""))
		c := dialTLSCert(t, h, certOf(t, a))
		expectAccepted(t, c, c.x509Connect(d))
		update(d.id, func(dev *herd.Device) { dev.Authentication.X509Thumbprint.PrimaryThumbprint = &b1 })
		c.expectClosed()
		c2 := dialTLSCert(t, h, certOf(t, b))
		expectAccepted(t, c2, c2.x509Connect(d))
	})
	t.Run("switched to sas", func(t *testing.T) {
		d := x509Device(t, h, "tosas", thumbs(a1, ""))
		c := dialTLSCert(t, h, certOf(t, a))
		expectAccepted(t, c, c.x509Connect(d))
		update(d.id, func(dev *herd.Device) {
			dev.Authentication = herd.Authentication{Type: herd.AuthSAS}
		})
		c.expectClosed()
	})
	t.Run("disabled", func(t *testing.T) {
		d := x509Device(t, h, "off", thumbs(a1, ""))
		c := dialTLSCert(t, h, certOf(t, a))
		expectAccepted(t, c, c.x509Connect(d))
		update(d.id, func(dev *herd.Device) { dev.Status = herd.DeviceDisabled })
		c.expectClosed()
	})
	t.Run("a sas device switched to selfSigned", func(t *testing.T) {
		d := newDevice(t, h, "fromsas")
		c := dialTLSCert(t, h, nil)
		c.connect(d, true, now)
		update(d.id, func(dev *herd.Device) { dev.Authentication = thumbs(a1, "") })
		c.expectClosed()
	})
}

// Modules authenticate with certificates as devices do: a selfSigned
// module by its thumbprints, a certificateAuthority module by a chain to
// a verified CA whose CN is the module's identity {deviceId}/{moduleId}.
func TestX509Module(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	now := time.Now()
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "edge"}); err != nil {
		t.Fatal(err)
	}
	a, b := selfSigned(t, "a", now.Add(-time.Hour), 24*time.Hour), selfSigned(t, "b", now.Add(-time.Hour), 24*time.Hour)
	a1, _ := certs.Thumbprints(a.Cert)
	if _, err := h.Service.CreateModule(ctx, herd.Module{DeviceID: "edge", ModuleID: "cam", Authentication: thumbs(a1, "")}); err != nil {
		t.Fatal(err)
	}
	ca := newCA(t, "modules CA")
	verifyCA(t, h, "modules", ca)
	if _, err := h.Service.CreateModule(ctx, herd.Module{DeviceID: "edge", ModuleID: "mic", Authentication: caAuth}); err != nil {
		t.Fatal(err)
	}
	cam, mic := device{id: "edge/cam", h: h}, device{id: "edge/mic", h: h}
	t.Run("selfSigned module", func(t *testing.T) {
		c := dialTLSCert(t, h, certOf(t, a))
		expectAccepted(t, c, c.x509Connect(cam))
	})
	t.Run("selfSigned module, another certificate", func(t *testing.T) {
		c := dialTLSCert(t, h, certOf(t, b))
		expectRefused(t, c, c.x509Connect(cam))
	})
	t.Run("CA-signed module", func(t *testing.T) {
		c := dialTLSCert(t, h, certOf(t, issue(t, ca, "edge/mic", now.Add(-time.Hour), time.Hour*2)))
		expectAccepted(t, c, c.x509Connect(mic))
	})
	t.Run("CA-signed for the device, not the module", func(t *testing.T) {
		c := dialTLSCert(t, h, certOf(t, issue(t, ca, "edge", now.Add(-time.Hour), time.Hour*2)))
		expectRefused(t, c, c.x509Connect(mic))
	})
}
