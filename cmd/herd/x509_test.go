package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hubtest"
)

// connectX509 connects a device with the certificate and key files
// herd cert device wrote, and returns the outcome of Connect.
func connectX509(t *testing.T, h *hubtest.Hub, cs, certFile, keyFile string) error {
	t.Helper()
	c, err := device.New(cs, device.WithCA(h.CA), device.WithAddress(h.MQTTAddr), device.WithClientCertificateFiles(certFile, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.Connect(ctx)
}

var sha1Line = regexp.MustCompile(`(?m)^thumbprint\s+([0-9A-F]{40}) \(SHA-1\)$`)

// The CLI path of X.509 devices: herd cert device issues certificates,
// herd ca add registers (and, for the data folder's own CA, verifies) a
// CA, herd device create registers devices by thumbprint or CA, and
// herd connection-string gives them x509=true.
func TestX509CLI(t *testing.T) {
	h := hubtest.Start(t)
	dir, out := h.Dir, t.TempDir()
	local := []string{"--data", dir}
	if spec := hubtest.StoreFor(t, dir); spec != "" {
		local = append(local, "--store", spec) // HERD_TEST_STORE=postgres
	}
	cli := func(args ...string) string {
		t.Helper()
		flags := local
		if args[0] == "cert" { // reads the data folder's CA only
			flags = local[:2]
		}
		s, err := runCLI(t, noEnv, append(args, flags...)...)
		if err != nil {
			t.Fatalf("herd %s: %v\n%s", strings.Join(args, " "), err, s)
		}
		return s
	}

	// CA-signed: the local CA, verified at once since the data folder
	// holds its key.
	s := cli("cert", "device", "cadev", "--out", out)
	if !strings.Contains(s, "herd device create cadev --x509-ca") {
		t.Errorf("cert device output:\n%s", s)
	}
	leaf, err := os.ReadFile(filepath.Join(out, "cadev.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.ParseCertificate(leaf)
	if err != nil || cert.Subject.CommonName != "cadev" {
		t.Fatalf("issued %v, %v", cert, err)
	}
	if st, err := os.Stat(filepath.Join(out, "cadev-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", st, err)
	}
	if s := cli("ca", "add", "local", filepath.Join(dir, certs.CAFile)); !regexp.MustCompile(`verified\s+true`).MatchString(s) {
		t.Errorf("ca add local:\n%s", s)
	}
	if s := cli("device", "create", "cadev", "--x509-ca"); !strings.Contains(s, `"type": "certificateAuthority"`) {
		t.Errorf("device create --x509-ca:\n%s", s)
	}
	cs := strings.TrimSpace(cli("connection-string", "--device", "cadev"))
	if !strings.HasSuffix(cs, ";DeviceId=cadev;x509=true") {
		t.Errorf("connection string %q", cs)
	}
	if err := connectX509(t, h, cs, filepath.Join(out, "cadev.pem"), filepath.Join(out, "cadev-key.pem")); err != nil {
		t.Errorf("connect with the issued certificate: %v", err)
	}
	cli("cert", "device", "cadev", "--out", filepath.Join(out, "old"), "--start", "2020-01-01T00:00:00Z", "--days", "1")
	if err := connectX509(t, h, cs, filepath.Join(out, "old", "cadev.pem"), filepath.Join(out, "old", "cadev-key.pem")); !herd.IsCode(err, herd.ErrUnauthorized) {
		t.Errorf("connect with an expired certificate: %v, want IotHubUnauthorizedAccess", err)
	}

	// Self-signed, registered by its thumbprint.
	s = cli("cert", "device", "ss", "--self-signed", "--out", out)
	m := sha1Line.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no SHA-1 thumbprint in:\n%s", s)
	}
	if s := cli("device", "create", "ss", "--x509-thumbprint", m[1]); !strings.Contains(s, `"type": "selfSigned"`) || !strings.Contains(s, m[1]) {
		t.Errorf("device create --x509-thumbprint:\n%s", s)
	}
	if err := connectX509(t, h, "HostName=localhost;DeviceId=ss;x509=true", filepath.Join(out, "ss.pem"), filepath.Join(out, "ss-key.pem")); err != nil {
		t.Errorf("connect self-signed: %v", err)
	}
	// The CA-signed certificate of another device is not this one's.
	if err := connectX509(t, h, "HostName=localhost;DeviceId=ss;x509=true", filepath.Join(out, "cadev.pem"), filepath.Join(out, "cadev-key.pem")); !herd.IsCode(err, herd.ErrUnauthorized) {
		t.Errorf("connect with another certificate: %v, want IotHubUnauthorizedAccess", err)
	}

	// Another CA: registered unverified, then proved with its key.
	_, caIssued, err := certs.NewCA(certs.Spec{CommonName: "Other CA"})
	if err != nil {
		t.Fatal(err)
	}
	caFile, keyFile := filepath.Join(out, "other.pem"), filepath.Join(out, "other-key.pem")
	if err := os.WriteFile(caFile, caIssued.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, caIssued.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s = cli("ca", "add", "other", caFile)
	if !regexp.MustCompile(`verified\s+false`).MatchString(s) || !regexp.MustCompile(`verification code\s+[0-9A-F]{48}`).MatchString(s) ||
		!strings.Contains(s, "herd ca verify other --key") {
		t.Errorf("ca add (no key):\n%s", s)
	}
	if s := cli("ca", "verify", "other", "--key", keyFile); !regexp.MustCompile(`verified\s+true`).MatchString(s) {
		t.Errorf("ca verify --key:\n%s", s)
	}
	if s := cli("ca", "list"); !strings.Contains(s, "local") || !strings.Contains(s, "other") || !strings.Contains(s, "CN=Other CA") {
		t.Errorf("ca list:\n%s", s)
	}
	cli("ca", "delete", "other")
	if s, err := runCLI(t, noEnv, append([]string{"ca", "show", "other"}, local...)...); err == nil || !strings.Contains(err.Error(), "no CA certificate named") {
		t.Errorf("ca show of a deleted CA: %v\n%s", err, s)
	}

	// Refusals the CLI or the hub make.
	for _, args := range [][]string{
		{"device", "create", "x", "--x509-thumbprint", "A,B,C"},
		{"device", "create", "x", "--x509-ca", "--primary-key", "c2VjcmV0a2V5LTAxMjM0NTY3ODlhYmNkZWY="},
		{"device", "create", "x", "--x509-thumbprint", "nothex"},
		{"ca", "verify", "local"},
		{"ca", "add", "bad", filepath.Join(out, "ss.pem")}, // not a CA
		{"cert", "device", "x", "--days", "0"},
	} {
		if s, err := runCLI(t, noEnv, append(args, "--data", dir)...); err == nil {
			t.Errorf("herd %s succeeded:\n%s", strings.Join(args, " "), s)
		}
	}
	if _, err := h.Service.GetDevice(context.Background(), "x"); !herd.IsCode(err, herd.ErrDeviceNotFound) {
		t.Errorf("a refused create wrote a device: %v", err)
	}
}
