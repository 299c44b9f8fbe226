package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hubtest"
)

const (
	sha1Hex   = "97388663832D0393C9246CAB4FBA2C8677185A25"
	sha256Hex = "0b2a1e7d7d0a8e4f9c26f5f3a1a4a44e6a43f7b6d3f85b1f2c5c4a1d8e9f0a1b"
)

// Devices that authenticate with certificates (§3.7): what each
// authentication type takes, and that a refused write writes nothing.
func TestX509DeviceValidation(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	bad := []struct{ name, auth string }{
		{"selfSigned without a thumbprint", `{"type":"selfSigned"}`},
		{"selfSigned with only a secondary", `{"type":"selfSigned","x509Thumbprint":{"secondaryThumbprint":"` + sha1Hex + `"}}`},
		{"thumbprint of 39 digits", `{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + sha1Hex[:39] + `"}}`},
		{"thumbprint of 48 digits", `{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + sha1Hex + `ABCDEF12"}}`},
		{"thumbprint not hex", `{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + strings.Repeat("G", 40) + `"}}`},
		{"bad secondary", `{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + sha1Hex + `","secondaryThumbprint":"xyz"}}`},
		{"selfSigned with keys", `{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + sha1Hex + `"},"symmetricKey":{"primaryKey":"c2VjcmV0a2V5LTAxMjM0NTY3ODlhYmNkZWY="}}`},
		{"certificateAuthority with a thumbprint", `{"type":"certificateAuthority","x509Thumbprint":{"primaryThumbprint":"` + sha1Hex + `"}}`},
		{"certificateAuthority with keys", `{"type":"certificateAuthority","symmetricKey":{"primaryKey":"c2VjcmV0a2V5LTAxMjM0NTY3ODlhYmNkZWY="}}`},
		{"sas with a thumbprint", `{"type":"sas","x509Thumbprint":{"primaryThumbprint":"` + sha1Hex + `"}}`},
		{"unknown type", `{"type":"password"}`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := r.do(http.MethodPut, "/devices/bad"+v, `{"deviceId":"bad","authentication":`+tc.auth+`}`, nil)
			expectError(t, resp, body, http.StatusBadRequest, herd.ErrArgumentInvalid)
			resp, body = r.do(http.MethodGet, "/devices/bad"+v, "", nil)
			expectError(t, resp, body, http.StatusNotFound, herd.ErrDeviceNotFound)
		})
	}

	// What Azure shows: the type, the thumbprints as given, keys null.
	resp, body := r.do(http.MethodPut, "/devices/ss"+v, `{"deviceId":"ss","authentication":{"x509Thumbprint":
		{"primaryThumbprint":"`+sha1Hex+`","secondaryThumbprint":"`+sha256Hex+`"}}}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create selfSigned: %d %s", resp.StatusCode, body)
	}
	wantAuth := `{"symmetricKey":{"primaryKey":null,"secondaryKey":null},"x509Thumbprint":{"primaryThumbprint":"` + sha1Hex +
		`","secondaryThumbprint":"` + sha256Hex + `"},"type":"selfSigned"}`
	if got := member(t, body, "authentication"); got != wantAuth {
		t.Errorf("selfSigned authentication:\n got  %s\n want %s", got, wantAuth)
	}
	tw, err := h.Service.GetTwin(context.Background(), "ss")
	if err != nil {
		t.Fatal(err)
	}
	if tw.AuthenticationType != "selfSigned" || tw.X509Thumbprint.PrimaryThumbprint == nil || *tw.X509Thumbprint.PrimaryThumbprint != sha1Hex ||
		tw.X509Thumbprint.SecondaryThumbprint == nil || *tw.X509Thumbprint.SecondaryThumbprint != sha256Hex {
		t.Errorf("twin authenticationType %q x509Thumbprint %+v", tw.AuthenticationType, tw.X509Thumbprint)
	}

	resp, body = r.do(http.MethodPut, "/devices/ca"+v, `{"deviceId":"ca","authentication":{"type":"certificateAuthority"}}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create certificateAuthority: %d %s", resp.StatusCode, body)
	}
	wantAuth = `{"symmetricKey":{"primaryKey":null,"secondaryKey":null},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"certificateAuthority"}`
	if got := member(t, body, "authentication"); got != wantAuth {
		t.Errorf("certificateAuthority authentication:\n got  %s\n want %s", got, wantAuth)
	}
	if tw, err := h.Service.GetTwin(context.Background(), "ca"); err != nil || tw.AuthenticationType != "certificateAuthority" {
		t.Errorf("twin of a certificateAuthority device: %+v %v", tw, err)
	}

	// A refused update leaves the device as it was.
	resp, body = r.do(http.MethodPut, "/devices/ss"+v, `{"deviceId":"ss","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"nothex"}}}`,
		map[string]string{"If-Match": "*"})
	expectError(t, resp, body, http.StatusBadRequest, herd.ErrArgumentInvalid)
	if d, err := h.Service.GetDevice(context.Background(), "ss"); err != nil || *d.Authentication.X509Thumbprint.PrimaryThumbprint != sha1Hex || d.ETag != "MQ==" {
		t.Errorf("after a refused update: %+v %v", d, err)
	}
	// Bulk creates follow the same rules.
	res, err := h.Service.BulkDevices(context.Background(), []herd.ImportDevice{
		{ID: "bulk-bad", ImportMode: "create", Authentication: &herd.Authentication{Type: herd.AuthCertificateAuthority,
			SymmetricKey: herd.SymmetricKey{PrimaryKey: "c2VjcmV0a2V5LTAxMjM0NTY3ODlhYmNkZWY="}}},
	})
	if err != nil || res.IsSuccessful {
		t.Errorf("bulk create with a bad combination: %+v %v", res, err)
	}
}

// member returns the compacted JSON text of one member of a JSON object,
// in the order the hub wrote it.
func member(t *testing.T, body []byte, name string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("not a JSON object: %s", body)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, m[name]); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func caBody(pemText string, verified bool) string {
	b, _ := json.Marshal(map[string]any{"properties": map[string]any{"certificate": pemText, "isVerified": verified}})
	return string(b)
}

// The CA certificate REST API (/certificates): registration, proof of
// possession, rights and errors.
func TestCACertificateAPI(t *testing.T) {
	h := hubtest.Start(t)
	r := newRaw(t, h)
	ca, caIssued, err := certs.NewCA(certs.Spec{CommonName: "Contoso root", Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	resp, body := r.do(http.MethodPut, "/certificates/contoso"+v, caBody(string(caIssued.CertPEM), false), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
	var got herd.CACertificate
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	sha1Of, sha256Of := certs.Thumbprints(ca.Cert)
	p := got.Properties
	if got.Name != "contoso" || p.IsVerified || len(p.VerificationCode) != 48 || p.Thumbprint != sha1Of || p.ThumbprintSHA256 != sha256Of ||
		p.Subject != "CN=Contoso root" || !p.Expiry.Equal(ca.Cert.NotAfter) || p.Created.IsZero() || !strings.HasPrefix(p.Certificate, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("registered %+v", got)
	}
	if resp.Header.Get("ETag") != `"`+got.ETag+`"` {
		t.Errorf("ETag header %q, etag %q", resp.Header.Get("ETag"), got.ETag)
	}

	t.Run("refusals", func(t *testing.T) {
		leaf, err := ca.Issue(certs.Spec{CommonName: "not a CA"})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, method, path, body string
			status                   int
			code                     herd.ErrorCode
		}{
			{"name taken", http.MethodPut, "/certificates/contoso", caBody(string(caIssued.CertPEM), false), 412, herd.ErrPreconditionFailed},
			{"isVerified true", http.MethodPut, "/certificates/other", caBody(string(caIssued.CertPEM), true), 400, herd.ErrArgumentInvalid},
			{"not a CA", http.MethodPut, "/certificates/other", caBody(string(leaf.CertPEM), false), 400, herd.ErrArgumentInvalid},
			{"not a certificate", http.MethodPut, "/certificates/other", caBody("hello", false), 400, herd.ErrArgumentInvalid},
			{"no certificate", http.MethodPut, "/certificates/other", `{"properties":{}}`, 400, herd.ErrArgumentNull},
			{"bad name", http.MethodPut, "/certificates/a%20b", caBody(string(caIssued.CertPEM), false), 400, herd.ErrArgumentInvalid},
			{"unknown", http.MethodGet, "/certificates/nope", "", 404, herd.ErrNotFound},
			{"verify unknown", http.MethodPost, "/certificates/nope/verify", `{"certificate":` + jsonString(string(leaf.CertPEM)) + `}`, 404, herd.ErrNotFound},
			{"verify with nothing", http.MethodPost, "/certificates/contoso/verify", `{}`, 400, herd.ErrArgumentNull},
			{"verify with the CA itself", http.MethodPost, "/certificates/contoso/verify",
				`{"certificate":` + jsonString(string(caIssued.CertPEM)) + `}`, 400, herd.ErrArgumentInvalid},
			{"stale etag", http.MethodDelete, "/certificates/contoso", "", 412, herd.ErrPreconditionFailed},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hdr := map[string]string{}
				if tc.name == "stale etag" {
					hdr["If-Match"] = `"OTk="`
				}
				resp, body := r.do(tc.method, tc.path+v, tc.body, hdr)
				expectError(t, resp, body, tc.status, tc.code)
			})
		}
		if _, err := h.Service.GetCACertificate(context.Background(), "other"); !herd.IsCode(err, herd.ErrNotFound) {
			t.Errorf("a refused PUT wrote a certificate: %v", err)
		}
	})

	t.Run("rights", func(t *testing.T) {
		ro := h.Client(t, connString(t, h, "registryRead"))
		if _, err := ro.ListCACertificates(context.Background()); err != nil {
			t.Errorf("registryRead lists CA certificates: %v", err)
		}
		if _, err := ro.CreateCACertificate(context.Background(), "ro", caIssued.CertPEM); !herd.IsCode(err, herd.ErrUnauthorized) {
			t.Errorf("registryRead registers a CA certificate: %v, want Unauthorized", err)
		}
		svc := h.Client(t, connString(t, h, "service"))
		if _, err := svc.GetCACertificate(context.Background(), "contoso"); !herd.IsCode(err, herd.ErrUnauthorized) {
			t.Errorf("service reads CA certificates: %v, want Unauthorized", err)
		}
	})

	t.Run("proof of possession", func(t *testing.T) {
		ctx := context.Background()
		c := h.Service
		// An old code no longer proves anything.
		old := got.Properties.VerificationCode
		fresh, err := c.GenerateVerificationCode(ctx, "contoso", got.ETag)
		if err != nil || fresh.Properties.VerificationCode == old || fresh.Properties.VerificationCode == "" {
			t.Fatalf("new code: %+v %v", fresh, err)
		}
		stale, err := ca.Issue(certs.Spec{CommonName: old})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.VerifyCACertificate(ctx, "contoso", stale.CertPEM, ""); !herd.IsCode(err, herd.ErrArgumentInvalid) {
			t.Fatalf("proof with the old code: %v, want ArgumentInvalid", err)
		}
		expired, err := ca.Issue(certs.Spec{CommonName: fresh.Properties.VerificationCode, NotBefore: time.Now().Add(-3 * time.Hour), Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.VerifyCACertificate(ctx, "contoso", expired.CertPEM, ""); !herd.IsCode(err, herd.ErrArgumentInvalid) {
			t.Fatalf("expired proof: %v, want ArgumentInvalid", err)
		}
		proof, err := ca.Issue(certs.Spec{CommonName: fresh.Properties.VerificationCode})
		if err != nil {
			t.Fatal(err)
		}
		// base64 DER is accepted as Azure accepts a .cer file.
		der := base64.StdEncoding.EncodeToString(proof.Cert.Raw)
		ok, err := c.VerifyCACertificate(ctx, "contoso", []byte(der), fresh.ETag)
		if err != nil || !ok.Properties.IsVerified || ok.Properties.VerificationCode != "" {
			t.Fatalf("verify: %+v %v", ok, err)
		}
		list, err := c.ListCACertificates(ctx)
		if err != nil || len(list) != 1 || !list[0].Properties.IsVerified {
			t.Errorf("list: %+v %v", list, err)
		}
		// Replacing the certificate makes it unverified again.
		again, err := c.ReplaceCACertificate(ctx, "contoso", []byte(base64.StdEncoding.EncodeToString(ca.Cert.Raw)), ok.ETag)
		if err != nil || again.Properties.IsVerified || again.Properties.VerificationCode == "" {
			t.Errorf("replace: %+v %v", again, err)
		}
		if err := c.DeleteCACertificate(ctx, "contoso", again.ETag); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetCACertificate(ctx, "contoso"); !herd.IsCode(err, herd.ErrNotFound) {
			t.Errorf("deleted: %v, want NotFound", err)
		}
	})
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func connString(t *testing.T, h *hubtest.Hub, policy string) string {
	t.Helper()
	cs, err := h.Hub.ConnectionString(policy)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
