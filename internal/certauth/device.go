package certauth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/certs"
)

// Result is the outcome of a device's certificate authentication.
type Result struct {
	// Expires is the earliest end of validity of the certificates that
	// authenticated the device: its connection is closed then.
	Expires time.Time
	// CA names the registered CA certificate the chain ended at ("" for a
	// selfSigned device).
	CA string
}

func unauthorized(format string, args ...any) error {
	return herd.Errorf(herd.ErrUnauthorized, format, args...)
}

// Authenticate checks the certificate chain a device presented in its TLS
// handshake (leaf first, as crypto/tls gives it; the handshake has proved
// that the device holds the leaf's key) against the device's registry
// credentials, on the hub's clock. A selfSigned device's leaf must have
// one of its thumbprints (SHA-1 or SHA-256, compared without regard to
// case); a certificateAuthority device's leaf must name the device as its
// common name and chain, through the certificates presented after it, to
// a verified CA certificate, for TLS client authentication. Refusals are
// ErrUnauthorized errors that say why.
func (s *Service) Authenticate(ctx context.Context, deviceID string, keys auth.DeviceKeys, chain []*x509.Certificate) (Result, error) {
	if len(chain) == 0 {
		return Result{}, unauthorized("device %q uses %s authentication and presented no client certificate", deviceID, keys.Type)
	}
	if !keys.Enabled {
		return Result{}, unauthorized("device %q is disabled", deviceID)
	}
	leaf, now := chain[0], s.now()
	if err := checkDates(leaf, now); err != nil {
		return Result{}, err
	}
	switch keys.Type {
	case herd.AuthSelfSigned:
		sha1Hex, sha256Hex := certs.Thumbprints(leaf)
		for _, t := range []string{keys.PrimaryThumbprint, keys.SecondaryThumbprint} {
			if t != "" && (strings.EqualFold(t, sha1Hex) || strings.EqualFold(t, sha256Hex)) {
				return Result{Expires: leaf.NotAfter}, nil
			}
		}
		return Result{}, unauthorized("the client certificate's thumbprint (SHA-1 %s, SHA-256 %s) is neither of device %q's thumbprints",
			sha1Hex, sha256Hex, deviceID)
	case herd.AuthCertificateAuthority:
		if cn := leaf.Subject.CommonName; cn != deviceID {
			return Result{}, unauthorized("the client certificate's common name is %q, not the device id %q", cn, deviceID)
		}
		return s.verifyChain(ctx, chain, now)
	}
	return Result{}, unauthorized("device %q uses %s authentication, not a certificate", deviceID, keys.Type)
}

func checkDates(c *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(c.NotBefore):
		return unauthorized("the client certificate %q is not valid before %s", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	case now.After(c.NotAfter):
		return unauthorized("the client certificate %q expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// verifyChain verifies a device's chain to a verified CA.
func (s *Service) verifyChain(ctx context.Context, chain []*x509.Certificate, now time.Time) (Result, error) {
	t, err := s.load(ctx)
	if err != nil {
		return Result{}, err
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: t.verified, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	chains, err := leaf.Verify(opts)
	if err == nil {
		r := Result{Expires: leaf.NotAfter}
		for _, c := range chains[0] {
			if c.NotAfter.Before(r.Expires) {
				r.Expires = c.NotAfter
			}
		}
		_, thumb := certs.Thumbprints(chains[0][len(chains[0])-1])
		r.CA = t.names[thumb]
		return r, nil
	}
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		opts.Roots = t.all
		if chains, err := leaf.Verify(opts); err == nil {
			_, thumb := certs.Thumbprints(chains[0][len(chains[0])-1])
			return Result{}, unauthorized("the client certificate is signed by CA certificate %q, which is not verified "+
				"(its owner has not proved possession of its key: herd ca verify)", t.names[thumb])
		}
		return Result{}, unauthorized("the client certificate %q is not signed by a CA certificate registered with the hub", leaf.Subject.CommonName)
	case errors.As(err, &invalid):
		return Result{}, unauthorized("the client certificate's chain is not valid: %v", invalid)
	}
	return Result{}, unauthorized("the client certificate's chain is not valid: %v", err)
}

// trust is what the registered CAs authenticate, loaded from the store.
type trust struct {
	verified *x509.CertPool    // verified CAs: anchors of device chains
	all      *x509.CertPool    // every registered CA, to explain refusals
	names    map[string]string // SHA-256 thumbprint → name
}

// load returns the cached CAs, reading them from the store after a change.
func (s *Service) load(ctx context.Context) (*trust, error) {
	s.mu.Lock()
	t, gen := s.trust, s.gen
	s.mu.Unlock()
	if t != nil {
		return t, nil
	}
	cas, err := s.store.CACertificates(ctx)
	if err != nil {
		return nil, fmt.Errorf("load CA certificates: %w", err)
	}
	t = &trust{verified: x509.NewCertPool(), all: x509.NewCertPool(), names: map[string]string{}}
	for _, ca := range cas {
		cert, err := ca.Certificate()
		if err != nil {
			return nil, fmt.Errorf("parse CA certificate %q: %w", ca.Name, err)
		}
		t.all.AddCert(cert)
		if ca.Verified {
			t.verified.AddCert(cert)
		}
		if _, ok := t.names[ca.Thumbprint]; !ok || ca.Verified {
			t.names[ca.Thumbprint] = ca.Name
		}
	}
	s.mu.Lock()
	if s.gen == gen {
		s.trust = t
	}
	s.mu.Unlock()
	return t, nil
}
