package certauth_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/certauth"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/store/sqlite"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newService(t *testing.T, now *time.Time) (*certauth.Service, *int) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	changes := 0
	return certauth.NewService(db, func() time.Time { return *now }, func() { changes++ }), &changes
}

// The reasons of refusals, which the gateway logs with CONNACK 5, and the
// expiry of accepted chains, on the service's clock.
func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	now := t0
	s, changes := newService(t, &now)
	root, rootCert, err := certs.NewCA(certs.Spec{CommonName: "root", NotBefore: t0.Add(-time.Hour), Validity: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := s.Put(ctx, "root", string(rootCert.CertPEM), "")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.Issue(certs.Spec{CommonName: "dev", NotBefore: t0.Add(-time.Hour), Validity: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{leaf.Cert}
	caKeys := auth.DeviceKeys{Enabled: true, Type: herd.AuthCertificateAuthority}
	refused := func(keys auth.DeviceKeys, chain []*x509.Certificate, want string) {
		t.Helper()
		_, err := s.Authenticate(ctx, "dev", keys, chain)
		if !herd.IsCode(err, herd.ErrUnauthorized) || !strings.Contains(herd.ErrorMessage(err), want) {
			t.Errorf("got %v, want IotHubUnauthorizedAccess saying %q", err, want)
		}
	}
	refused(caKeys, chain, `signed by CA certificate "root", which is not verified`)
	proof, _ := root.Issue(certs.Spec{CommonName: reg.VerificationCode, NotBefore: t0.Add(-time.Hour)})
	if _, err := s.Verify(ctx, "root", string(proof.CertPEM), ""); err != nil {
		t.Fatal(err)
	}
	if *changes != 1 {
		t.Errorf("%d change notices after verify, want 1", *changes)
	}
	if _, err := s.Verify(ctx, "root", string(proof.CertPEM), ""); err != nil || *changes != 1 {
		t.Errorf("verifying again: %v, %d notices (want nil, still 1)", err, *changes)
	}
	res, err := s.Authenticate(ctx, "dev", caKeys, chain)
	if err != nil || res.CA != "root" || !res.Expires.Equal(leaf.Cert.NotAfter) {
		t.Fatalf("accepted %+v, %v", res, err)
	}
	refused(auth.DeviceKeys{Type: herd.AuthCertificateAuthority}, chain, "disabled")
	refused(caKeys, nil, "presented no client certificate")
	other, _ := root.Issue(certs.Spec{CommonName: "someone", NotBefore: t0.Add(-time.Hour)})
	refused(caKeys, []*x509.Certificate{other.Cert}, `common name is "someone", not the device id "dev"`)
	stranger, _, _ := certs.NewCA(certs.Spec{CommonName: "stranger", NotBefore: t0.Add(-time.Hour)})
	foreign, _ := stranger.Issue(certs.Spec{CommonName: "dev", NotBefore: t0.Add(-time.Hour)})
	refused(caKeys, []*x509.Certificate{foreign.Cert}, "not signed by a CA certificate registered with the hub")
	sha1Hex, sha256Hex := certs.Thumbprints(leaf.Cert)
	refused(auth.DeviceKeys{Enabled: true, Type: herd.AuthSelfSigned, PrimaryThumbprint: strings.Repeat("0", 40)}, chain,
		"thumbprint (SHA-1 "+sha1Hex+", SHA-256 "+sha256Hex+") is neither")
	ss := auth.DeviceKeys{Enabled: true, Type: herd.AuthSelfSigned, SecondaryThumbprint: strings.ToLower(sha256Hex)}
	if res, err := s.Authenticate(ctx, "any-id", ss, chain); err != nil || !res.Expires.Equal(leaf.Cert.NotAfter) || res.CA != "" {
		t.Errorf("selfSigned by the secondary SHA-256: %+v, %v", res, err)
	}
	refused(auth.DeviceKeys{Enabled: true, Type: herd.AuthSAS}, chain, "uses sas authentication, not a certificate")

	// The dates, on the service's clock: valid through NotAfter.
	now = leaf.Cert.NotAfter
	if _, err := s.Authenticate(ctx, "dev", caKeys, chain); err != nil {
		t.Errorf("at NotAfter: %v", err)
	}
	now = leaf.Cert.NotAfter.Add(time.Second)
	refused(caKeys, chain, "expired at")
	now = leaf.Cert.NotBefore.Add(-time.Second)
	refused(caKeys, chain, "is not valid before")

	// Deleting the CA takes its trust away, and says so.
	now = t0
	if err := s.Delete(ctx, "root", ""); err != nil {
		t.Fatal(err)
	}
	if *changes != 2 {
		t.Errorf("%d change notices after delete, want 2", *changes)
	}
	refused(caKeys, chain, "not signed by a CA certificate registered with the hub")
}
