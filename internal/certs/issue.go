package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Issuer is a certificate authority that signs certificates: the local CA
// of a data folder (LocalIssuer), one loaded from files (LoadIssuer), or a
// new one (NewCA). Device certificates for X.509 authentication are issued
// with it (herd cert device), and so is the certificate that proves
// possession of a CA's key when it is registered (herd ca verify).
type Issuer struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Spec describes a certificate to issue. NotBefore zero means an hour ago
// (so that clocks a little behind accept it); Validity zero means a year.
type Spec struct {
	CommonName string
	NotBefore  time.Time
	Validity   time.Duration
	// CA makes a certificate authority (for tests and chains of CAs).
	CA bool
}

// Issued is a new certificate and its private key.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// TLSCertificate returns the certificate and key for a TLS client.
func (i *Issued) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(i.CertPEM, i.KeyPEM)
}

// LocalIssuer returns the local CA of the data folder dir, which a hub
// creates on first start (ca.pem and ca-key.pem).
func LocalIssuer(dir string) (*Issuer, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("the data folder %s has no local CA (start `herd serve --data %s` once to create it): %w", dir, dir, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read the local CA's key: %w", err)
	}
	return LoadIssuer(certPEM, keyPEM)
}

// LocalCAKeyFile is the path of the local CA's private key in dir.
func LocalCAKeyFile(dir string) string { return filepath.Join(dir, caKeyFile) }

// LoadIssuer parses a CA certificate and its private key (PEM: EC, PKCS #1
// RSA or PKCS #8) and checks that they belong together.
func LoadIssuer(certPEM, keyPEM []byte) (*Issuer, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, errors.New("the private key does not belong to the certificate")
	}
	return &Issuer{Cert: cert, Key: key}, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// ParseCertificate parses the first certificate of PEM text or, failing
// that, base64 or raw DER (the forms Azure accepts for a .cer file).
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			return c, nil
		}
	}
	der := data
	if d, err := decodeBase64(strings.TrimSpace(string(data))); err == nil {
		der = d
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errors.New("no certificate found: give PEM (-----BEGIN CERTIFICATE-----) or base64 DER")
	}
	return c, nil
}

// ParseCertificates parses every certificate of PEM text (a chain).
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		c, err := ParseCertificate(data)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// ParsePrivateKey parses a PEM private key: EC, PKCS #1 RSA or PKCS #8.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no private key found (PEM EC PRIVATE KEY, RSA PRIVATE KEY or PRIVATE KEY)")
		}
		switch b.Type {
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(b.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("a %T key cannot sign", k)
			}
			return s, nil
		}
	}
}

// NewCA makes a new self-signed certificate authority.
func NewCA(spec Spec) (*Issuer, *Issued, error) {
	spec.CA = true
	iss, err := issueCert(nil, spec)
	if err != nil {
		return nil, nil, err
	}
	key, err := ParsePrivateKey(iss.KeyPEM)
	if err != nil {
		return nil, nil, err
	}
	return &Issuer{Cert: iss.Cert, Key: key}, iss, nil
}

// SelfSigned makes a self-signed device certificate (for a device whose
// registry authentication is selfSigned: the hub knows its thumbprint).
func SelfSigned(spec Spec) (*Issued, error) { return issueCert(nil, spec) }

// Issue signs a new certificate for spec. A device certificate is for TLS
// client authentication; its common name is the device id.
func (i *Issuer) Issue(spec Spec) (*Issued, error) { return issueCert(i, spec) }

// PEM is the issuer's certificate in PEM.
func (i *Issuer) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.Cert.Raw})
}

func issueCert(parent *Issuer, spec Spec) (*Issued, error) {
	if spec.CommonName == "" {
		return nil, errors.New("a certificate needs a common name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	nb := spec.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	validity := spec.Validity
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: spec.CommonName},
		NotBefore:    nb,
		NotAfter:     nb.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if spec.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.ExtKeyUsage = nil
		tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	}
	signer, signKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %q: %w", spec.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// Thumbprints returns the hex SHA-1 and SHA-256 digests of a certificate's
// DER encoding, in upper case: the thumbprints Azure shows and accepts.
func Thumbprints(c *x509.Certificate) (sha1Hex, sha256Hex string) {
	s1 := sha1.Sum(c.Raw)
	s256 := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(s1[:])), strings.ToUpper(hex.EncodeToString(s256[:]))
}

// decodeBase64 decodes standard base64, ignoring line breaks.
func decodeBase64(s string) ([]byte, error) {
	s = strings.NewReplacer("\r", "", "\n", "", " ", "").Replace(s)
	return base64.StdEncoding.DecodeString(s)
}
