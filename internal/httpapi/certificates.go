package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/certauth"
)

// CACertificates manages the CA certificates that authenticate X.509
// devices (internal/certauth.Service).
type CACertificates interface {
	Put(ctx context.Context, name, certificate, ifMatch string) (certauth.CA, error)
	Get(ctx context.Context, name string) (certauth.CA, error)
	List(ctx context.Context) ([]certauth.CA, error)
	Delete(ctx context.Context, name, ifMatch string) error
	NewVerificationCode(ctx context.Context, name, ifMatch string) (certauth.CA, error)
	Verify(ctx context.Context, name, proof, ifMatch string) (certauth.CA, error)
}

// HandleCertificates registers Herd's CA certificate API. Azure manages CA
// certificates through its management plane (Azure Resource Manager,
// .../IotHubs/{hub}/certificates/{name}); Herd offers the same operations
// and JSON shape on its own REST API:
//
//	GET    /certificates                                  list ({"value": […]})
//	GET    /certificates/{name}                           one
//	PUT    /certificates/{name}                           register ({"properties":{"certificate": PEM}}), unverified;
//	                                                      with If-Match, replace (unverified again)
//	DELETE /certificates/{name}                           remove (its devices are disconnected)
//	POST   /certificates/{name}/generateVerificationCode  a new code to sign
//	POST   /certificates/{name}/verify                    proof of possession ({"certificate": PEM})
//
// Reads need RegistryRead or RegistryWrite, changes RegistryWrite.
func (s *Server) HandleCertificates(cas CACertificates) {
	read := auth.RegistryRead | auth.RegistryWrite
	write := auth.RegistryWrite
	s.Handle("/certificates", map[string]Endpoint{
		http.MethodGet: {read, func(w http.ResponseWriter, r *http.Request) error {
			list, err := cas.List(r.Context())
			if err != nil {
				return err
			}
			out := herd.CACertificateList{Value: make([]herd.CACertificate, len(list))}
			for i, ca := range list {
				out.Value[i] = ca.Description()
			}
			writeJSON(w, http.StatusOK, out)
			return nil
		}},
	})
	s.Handle("/certificates/{name}", map[string]Endpoint{
		http.MethodGet: {read, func(w http.ResponseWriter, r *http.Request) error {
			return writeCA(w)(cas.Get(r.Context(), r.PathValue("name")))
		}},
		http.MethodPut: {write, func(w http.ResponseWriter, r *http.Request) error {
			var body struct {
				Properties struct {
					Certificate string `json:"certificate"`
					IsVerified  bool   `json:"isVerified"`
				} `json:"properties"`
			}
			if err := decodeBody(r, maxBody, &body); err != nil {
				return err
			}
			if body.Properties.IsVerified {
				return herd.Errorf(herd.ErrArgumentInvalid, "a CA certificate is registered unverified: prove possession of its key "+
					"with POST /certificates/{name}/verify (Herd does not take isVerified: true)")
			}
			return writeCA(w)(cas.Put(r.Context(), r.PathValue("name"), body.Properties.Certificate, r.Header.Get("If-Match")))
		}},
		http.MethodDelete: {write, func(w http.ResponseWriter, r *http.Request) error {
			if err := cas.Delete(r.Context(), r.PathValue("name"), r.Header.Get("If-Match")); err != nil {
				return err
			}
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusNoContent)
			return nil
		}},
	})
	s.Handle("/certificates/{name}/generateVerificationCode", map[string]Endpoint{
		http.MethodPost: {write, func(w http.ResponseWriter, r *http.Request) error {
			return writeCA(w)(cas.NewVerificationCode(r.Context(), r.PathValue("name"), r.Header.Get("If-Match")))
		}},
	})
	s.Handle("/certificates/{name}/verify", map[string]Endpoint{
		http.MethodPost: {write, func(w http.ResponseWriter, r *http.Request) error {
			var body herd.CACertificateProof
			if err := decodeBody(r, maxBody, &body); err != nil {
				return err
			}
			return writeCA(w)(cas.Verify(r.Context(), r.PathValue("name"), body.Certificate, r.Header.Get("If-Match")))
		}},
	})
}

// writeCA returns a function that writes a CA certificate with its ETag,
// or returns the error it is given.
func writeCA(w http.ResponseWriter) func(certauth.CA, error) error {
	return func(ca certauth.CA, err error) error {
		if err != nil {
			return err
		}
		d := ca.Description()
		writeEntity(w, d.ETag, d)
		return nil
	}
}
