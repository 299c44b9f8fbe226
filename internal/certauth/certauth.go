// Package certauth owns X.509 device authentication: the CA certificates
// registered with the hub, each proved by its owner before it counts
// (proof of possession: a certificate whose common name is a verification
// code the hub chose, signed by the CA's key), and the checks a device's
// client certificate must pass at CONNECT: for a selfSigned device its
// SHA-1 or SHA-256 thumbprint is one of the device's two, for a
// certificateAuthority device its chain ends at a verified CA and its
// common name is the device id; for both, every certificate is within its
// validity dates on the hub's clock.
//
// Azure manages CA certificates through its management plane (the ARM
// resource Microsoft.Devices/IotHubs/certificates), not the data plane the
// device and service SDKs use. Herd serves the same operations and JSON
// shape at /certificates on its own REST API (docs/compat.md).
package certauth

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/twin"
)

// MaxNameLength is the longest CA certificate name (Azure's limit).
const MaxNameLength = 64

// CA is a CA certificate registered with the hub.
type CA struct {
	Name string
	// PEM is the certificate, PEM-encoded.
	PEM string
	// Thumbprint is the upper-case hex SHA-256 digest of its DER encoding.
	Thumbprint string
	// Verified says the owner proved possession of the CA's key; only
	// verified CAs authenticate devices.
	Verified bool
	// VerificationCode is what the owner signs to prove possession: the
	// common name of a certificate issued by the CA. "" once verified.
	VerificationCode string
	Created, Updated time.Time
	// ETag rises with every change; the store sets it.
	ETag int64
}

// Certificate parses the CA's certificate.
func (c CA) Certificate() (*x509.Certificate, error) {
	return certs.ParseCertificate([]byte(c.PEM))
}

// Description is the CA as the REST API shows it (the shape of Azure's
// CertificateDescription, with the verification code while unverified).
func (c CA) Description() herd.CACertificate {
	d := herd.CACertificate{Name: c.Name, ETag: ETagString(c.ETag), Properties: herd.CACertificateProperties{
		IsVerified:       c.Verified,
		Created:          herd.NewTime(c.Created),
		Updated:          herd.NewTime(c.Updated),
		Certificate:      c.PEM,
		ThumbprintSHA256: c.Thumbprint,
		VerificationCode: c.VerificationCode,
	}}
	if cert, err := c.Certificate(); err == nil {
		d.Properties.Subject = cert.Subject.String()
		d.Properties.Expiry = herd.NewTime(cert.NotAfter)
		d.Properties.Thumbprint, _ = certs.Thumbprints(cert)
	}
	return d
}

// ETagString is a CA's etag on the wire: base64 of the decimal counter,
// as Herd writes device etags.
func ETagString(n int64) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(n, 10)))
}

// Store keeps CA certificates. Each method is one transaction.
type Store interface {
	// CACertificates returns every CA certificate in name order.
	CACertificates(ctx context.Context) ([]CA, error)
	// CACertificate returns one, or an ErrNotFound error.
	CACertificate(ctx context.Context, name string) (CA, error)
	// CreateCACertificate stores a new CA certificate with ETag 1 and
	// returns it; a name already taken is an ErrPreconditionFailed error.
	CreateCACertificate(ctx context.Context, ca CA) (CA, error)
	// UpdateCACertificate reads a CA certificate, lets change edit it (an
	// error from change writes nothing and is returned), writes it with
	// its ETag one higher and returns it. Unknown: ErrNotFound.
	UpdateCACertificate(ctx context.Context, name string, change func(*CA) error) (CA, error)
	// DeleteCACertificate removes a CA certificate if check (given the
	// current one) returns nil. Unknown: ErrNotFound.
	DeleteCACertificate(ctx context.Context, name string, check func(CA) error) error
}

// Service manages CA certificates and authenticates devices with
// certificates. It keeps the verified CAs in memory, reloaded after every
// change it makes.
type Service struct {
	store    Store
	now      func() time.Time
	onChange func()

	mu    sync.Mutex
	trust *trust // nil: load on next use
	gen   uint64 // rises on every change, so a load racing one is not kept
}

// NewService returns a service on store. onChange, if not nil, is called
// after a change that can affect which devices authenticate (a CA
// verified, replaced or deleted), so that live connections are checked
// again.
func NewService(store Store, now func() time.Time, onChange func()) *Service {
	if onChange == nil {
		onChange = func() {}
	}
	return &Service{store: store, now: now, onChange: onChange}
}

func notFound(name string) error {
	return herd.Errorf(herd.ErrNotFound, "no CA certificate named %q", name)
}

// ValidateName checks a CA certificate name: 1 to 64 ASCII letters,
// digits, '-', '.' and '_' (Azure's rule).
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLength {
		return herd.Errorf(herd.ErrArgumentInvalid, "a CA certificate name must be 1 to %d characters long", MaxNameLength)
	}
	for _, c := range []byte(name) {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_'
		if !ok {
			return herd.Errorf(herd.ErrArgumentInvalid, "the CA certificate name %q contains %q; names may use ASCII letters, digits, '-', '.' and '_'", name, c)
		}
	}
	return nil
}

// parseCA checks an uploaded CA certificate: PEM or base64 DER of a
// certificate that may sign others (basic constraints CA:TRUE). It
// returns the certificate re-encoded as PEM.
func parseCA(text string) (*x509.Certificate, string, error) {
	if strings.TrimSpace(text) == "" {
		return nil, "", herd.Errorf(herd.ErrArgumentNull, "the certificate is empty")
	}
	cert, err := certs.ParseCertificate([]byte(text))
	if err != nil {
		return nil, "", herd.Errorf(herd.ErrArgumentInvalid, "%v", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, "", herd.Errorf(herd.ErrArgumentInvalid, "%q is not a CA certificate (its basic constraints do not say CA:TRUE), so it cannot sign device certificates", cert.Subject.String())
	}
	return cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})), nil
}

func newCode() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

// Put registers a CA certificate, unverified, with a new verification
// code. ifMatch "" creates it (ErrPreconditionFailed if the name is
// taken); "*" or its etag replaces an existing one's certificate, which
// makes it unverified again.
func (s *Service) Put(ctx context.Context, name, certificate, ifMatch string) (CA, error) {
	if err := ValidateName(name); err != nil {
		return CA{}, err
	}
	cert, pemText, err := parseCA(certificate)
	if err != nil {
		return CA{}, err
	}
	_, thumb := certs.Thumbprints(cert)
	now := s.now().UTC()
	if twin.NormalizeETag(ifMatch) == "" {
		ca, err := s.store.CreateCACertificate(ctx, CA{Name: name, PEM: pemText, Thumbprint: thumb,
			VerificationCode: newCode(), Created: now, Updated: now})
		if herd.IsCode(err, herd.ErrPreconditionFailed) {
			return CA{}, herd.Errorf(herd.ErrPreconditionFailed, "a CA certificate named %q exists; give its etag (If-Match) to replace it", name)
		}
		if err == nil {
			s.invalidate() // not trusted yet, but known (refusals name it)
		}
		return ca, err
	}
	ca, err := s.store.UpdateCACertificate(ctx, name, func(c *CA) error {
		if err := twin.CheckETag(ifMatch, ETagString(c.ETag)); err != nil {
			return err
		}
		c.PEM, c.Thumbprint, c.Verified, c.VerificationCode, c.Updated = pemText, thumb, false, newCode(), now
		return nil
	})
	if err != nil {
		return CA{}, err
	}
	s.changed()
	return ca, nil
}

// Get returns a CA certificate.
func (s *Service) Get(ctx context.Context, name string) (CA, error) {
	if ValidateName(name) != nil {
		return CA{}, notFound(name)
	}
	return s.store.CACertificate(ctx, name)
}

// List returns every CA certificate in name order.
func (s *Service) List(ctx context.Context) ([]CA, error) { return s.store.CACertificates(ctx) }

// Delete removes a CA certificate; ifMatch is "", "*" or its etag.
// Devices it authenticated are disconnected.
func (s *Service) Delete(ctx context.Context, name, ifMatch string) error {
	if ValidateName(name) != nil {
		return notFound(name)
	}
	err := s.store.DeleteCACertificate(ctx, name, func(c CA) error {
		return twin.CheckETag(ifMatch, ETagString(c.ETag))
	})
	if err != nil {
		return err
	}
	s.changed()
	return nil
}

// NewVerificationCode gives a CA certificate a new verification code
// (Azure's generateVerificationCode); the previous one no longer proves
// anything. A verified CA stays verified.
func (s *Service) NewVerificationCode(ctx context.Context, name, ifMatch string) (CA, error) {
	if ValidateName(name) != nil {
		return CA{}, notFound(name)
	}
	return s.store.UpdateCACertificate(ctx, name, func(c *CA) error {
		if err := twin.CheckETag(ifMatch, ETagString(c.ETag)); err != nil {
			return err
		}
		c.VerificationCode, c.Updated = newCode(), s.now().UTC()
		return nil
	})
}

// Verify checks the proof of possession of a CA's key: proof (PEM or
// base64 DER) must be a certificate whose common name is the CA's
// verification code, signed by the CA's key, and within its validity
// dates, as must the CA. The CA is then verified and authenticates
// devices. Verifying a verified CA again changes nothing.
func (s *Service) Verify(ctx context.Context, name, proof, ifMatch string) (CA, error) {
	if ValidateName(name) != nil {
		return CA{}, notFound(name)
	}
	if strings.TrimSpace(proof) == "" {
		return CA{}, herd.Errorf(herd.ErrArgumentNull, "the verification certificate is empty")
	}
	leaf, err := certs.ParseCertificate([]byte(proof))
	if err != nil {
		return CA{}, herd.Errorf(herd.ErrArgumentInvalid, "the verification certificate: %v", err)
	}
	cur, err := s.store.CACertificate(ctx, name)
	if err != nil {
		return CA{}, err
	}
	if err := twin.CheckETag(ifMatch, ETagString(cur.ETag)); err != nil {
		return CA{}, err
	}
	if cur.Verified {
		return cur, nil // nothing to write, nobody to recheck
	}
	now := s.now()
	ca, err := s.store.UpdateCACertificate(ctx, name, func(c *CA) error {
		if err := twin.CheckETag(ifMatch, ETagString(c.ETag)); err != nil {
			return err
		}
		if c.Verified {
			return nil
		}
		cert, err := c.Certificate()
		if err != nil {
			return fmt.Errorf("parse stored CA certificate %q: %w", c.Name, err)
		}
		if err := checkProof(cert, leaf, c.VerificationCode, now); err != nil {
			return err
		}
		c.Verified, c.VerificationCode, c.Updated = true, "", now.UTC()
		return nil
	})
	if err != nil {
		return CA{}, err
	}
	s.changed()
	return ca, nil
}

func checkProof(ca, leaf *x509.Certificate, code string, now time.Time) error {
	invalid := func(format string, args ...any) error {
		return herd.Errorf(herd.ErrArgumentInvalid, "proof of possession failed: "+format, args...)
	}
	switch {
	case leaf.Subject.CommonName != code:
		return invalid("the verification certificate's common name is %q, not the verification code %s", leaf.Subject.CommonName, code)
	case leaf.CheckSignatureFrom(ca) != nil:
		return invalid("the verification certificate is not signed by the key of CA certificate %q", ca.Subject.String())
	case now.Before(leaf.NotBefore) || now.After(leaf.NotAfter):
		return invalid("the verification certificate is valid from %s to %s, not now", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(ca.NotBefore) || now.After(ca.NotAfter):
		return invalid("the CA certificate is valid from %s to %s, not now", ca.NotBefore.UTC().Format(time.RFC3339), ca.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// invalidate drops the cached CAs.
func (s *Service) invalidate() {
	s.mu.Lock()
	s.trust = nil
	s.gen++
	s.mu.Unlock()
}

// changed drops the cached CAs and tells the gateway.
func (s *Service) changed() {
	s.invalidate()
	s.onChange()
}
