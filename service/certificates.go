package service

import (
	"context"
	"net/http"
	"net/url"

	"github.com/herd-iot/herd"
)

// CA certificates authenticate devices whose registry authentication is
// certificateAuthority: a device certificate whose chain ends at a
// verified CA certificate and whose common name is the device id. A CA
// certificate is registered unverified with a verification code; its
// owner proves possession of its private key by signing a certificate
// whose common name is that code (VerifyCACertificate).
//
// These calls are Herd's own REST API (/certificates): Azure IoT Hub
// manages CA certificates through Azure Resource Manager instead.

func caPath(name string) string { return "/certificates/" + url.PathEscape(name) }

type caBody struct {
	Properties struct {
		Certificate string `json:"certificate"`
	} `json:"properties"`
}

// CreateCACertificate registers a CA certificate (PEM, or base64 DER)
// under name, unverified; the result carries its verification code. A
// name already taken fails with ErrPreconditionFailed.
func (c *Client) CreateCACertificate(ctx context.Context, name string, certificate []byte) (*herd.CACertificate, error) {
	var body caBody
	body.Properties.Certificate = string(certificate)
	var out herd.CACertificate
	if _, err := c.do(ctx, request{method: http.MethodPut, path: caPath(name), body: body, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReplaceCACertificate replaces the certificate of a registered CA, which
// makes it unverified again. etag "" or "*" replaces it unconditionally.
func (c *Client) ReplaceCACertificate(ctx context.Context, name string, certificate []byte, etag string) (*herd.CACertificate, error) {
	var body caBody
	body.Properties.Certificate = string(certificate)
	var out herd.CACertificate
	_, err := c.do(ctx, request{method: http.MethodPut, path: caPath(name), header: ifMatch(etag), body: body, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetCACertificate returns a registered CA certificate.
func (c *Client) GetCACertificate(ctx context.Context, name string) (*herd.CACertificate, error) {
	var out herd.CACertificate
	if _, err := c.do(ctx, request{method: http.MethodGet, path: caPath(name), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListCACertificates returns every registered CA certificate in name
// order.
func (c *Client) ListCACertificates(ctx context.Context) ([]herd.CACertificate, error) {
	var out herd.CACertificateList
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/certificates", out: &out}); err != nil {
		return nil, err
	}
	return out.Value, nil
}

// DeleteCACertificate removes a CA certificate; devices connected through
// it are disconnected. etag as in ReplaceCACertificate.
func (c *Client) DeleteCACertificate(ctx context.Context, name, etag string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: caPath(name), header: ifMatch(etag)})
	return err
}

// GenerateVerificationCode gives a CA certificate a new verification code
// and returns it with the code; the previous code no longer verifies.
func (c *Client) GenerateVerificationCode(ctx context.Context, name, etag string) (*herd.CACertificate, error) {
	var out herd.CACertificate
	_, err := c.do(ctx, request{method: http.MethodPost, path: caPath(name) + "/generateVerificationCode", header: ifMatch(etag), out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// VerifyCACertificate proves possession of a CA certificate's key: proof
// is a certificate (PEM or base64 DER) whose common name is the
// verification code, signed by the CA's key. The CA is then verified.
func (c *Client) VerifyCACertificate(ctx context.Context, name string, proof []byte, etag string) (*herd.CACertificate, error) {
	var out herd.CACertificate
	_, err := c.do(ctx, request{method: http.MethodPost, path: caPath(name) + "/verify", header: ifMatch(etag),
		body: herd.CACertificateProof{Certificate: string(proof)}, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
