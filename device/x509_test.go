package device_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hubtest"
)

// A device that authenticates with an X.509 certificate: x509=true in its
// connection string and the certificate given with WithClientCertificate.
func TestX509(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	self, err := certs.SelfSigned(certs.Spec{CommonName: "ss"})
	if err != nil {
		t.Fatal(err)
	}
	thumb, _ := certs.Thumbprints(self.Cert)
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "ss", Authentication: herd.Authentication{
		Type: herd.AuthSelfSigned, X509Thumbprint: herd.X509Thumbprint{PrimaryThumbprint: &thumb}}}); err != nil {
		t.Fatal(err)
	}
	cs, err := h.DeviceConnectionString(ctx, "ss")
	if err != nil || !strings.HasSuffix(cs, ";DeviceId=ss;x509=true") {
		t.Fatalf("connection string %q, %v", cs, err)
	}
	if _, err := device.New(cs); err == nil || !strings.Contains(err.Error(), "WithClientCertificate") {
		t.Errorf("x509=true without a certificate: %v", err)
	}
	tc, err := self.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	wss := "wss://" + strings.Replace(h.HTTPSAddr().String(), "127.0.0.1", "localhost", 1)
	for _, tr := range []struct {
		name string
		opts []device.Option
	}{
		{"TLS", []device.Option{device.WithAddress(h.MQTTAddr)}},
		{"WebSocket", []device.Option{device.WithTransport(device.WebSocket), device.WithAddress(wss)}},
	} {
		t.Run(tr.name, func(t *testing.T) {
			c, err := device.New(cs, append(tr.opts, device.WithCA(h.CA), device.WithClientCertificate(tc))...)
			if err != nil {
				t.Fatal(err)
			}
			c.OnMethod("echo", echo)
			desired := make(chan int64, 4)
			c.OnDesiredChange(func(_ map[string]any, v int64) { desired <- v })
			if err := c.Connect(ctx); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := h.Service.InvokeMethod(ctx, "ss", herd.MethodRequest{MethodName: "echo", Payload: json.RawMessage(`1`)})
			if err != nil || string(res.Payload) != `{"echo":1}` {
				t.Fatalf("invoke: %+v %v", res, err)
			}
			if _, err := h.Service.UpdateTwin(ctx, "ss", herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"via": tr.name}}}, "*"); err != nil {
				t.Fatal(err)
			}
			select {
			case <-desired:
			case <-time.After(10 * time.Second):
				t.Fatal("no desired push")
			}
		})
	}

	// CA-signed, from the hub's local CA once it is registered and
	// verified, and an expired certificate of the same CA.
	local, err := certs.LocalIssuer(h.Dir)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := h.Service.CreateCACertificate(ctx, "local", local.PEM())
	if err != nil {
		t.Fatal(err)
	}
	proof, _ := local.Issue(certs.Spec{CommonName: reg.Properties.VerificationCode})
	if _, err := h.Service.VerifyCACertificate(ctx, "local", proof.CertPEM, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "cadev", Authentication: herd.Authentication{Type: herd.AuthCertificateAuthority}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		notBefore time.Time
		ok        bool
	}{{"valid", time.Time{}, true}, {"expired", time.Now().Add(-48 * time.Hour), false}} {
		t.Run("CA-signed "+tc.name, func(t *testing.T) {
			iss, err := local.Issue(certs.Spec{CommonName: "cadev", NotBefore: tc.notBefore, Validity: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			cert, _ := iss.TLSCertificate()
			c, err := device.New("HostName=localhost;DeviceId=cadev;x509=true", device.WithCA(h.CA), device.WithAddress(h.MQTTAddr),
				device.WithClientCertificate(cert))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Connect(ctx)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("connect: %v", err)
			case !tc.ok && !herd.IsCode(err, herd.ErrUnauthorized):
				t.Fatalf("connect with an expired certificate: %v, want IotHubUnauthorizedAccess", err)
			}
		})
	}
}
