package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certauth"
)

// caTests check certauth.Store (CA certificates for X.509 device
// authentication); Run runs them.
var caTests = []struct {
	name string
	fn   func(*testing.T, Store)
}{
	{"CreateAndGet", func(t *testing.T, s Store) { testCACreateAndGet(t, s) }},
	{"CreateDuplicate", func(t *testing.T, s Store) { testCACreateDuplicate(t, s) }},
	{"List", func(t *testing.T, s Store) { testCAList(t, s) }},
	{"Update", func(t *testing.T, s Store) { testCAUpdate(t, s) }},
	{"FailedUpdateWritesNothing", func(t *testing.T, s Store) { testCAFailedUpdate(t, s) }},
	{"Delete", func(t *testing.T, s Store) { testCADelete(t, s) }},
}

// caPEM is a CA certificate as the store sees it: text it keeps, not
// parses.
const caPEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func newCA(name string) certauth.CA {
	return certauth.CA{Name: name, PEM: caPEM, Thumbprint: "AB12", VerificationCode: "C0DE" + name,
		Created: t0, Updated: t0.Add(time.Second)}
}

func createCA(t *testing.T, s certauth.Store, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := s.CreateCACertificate(context.Background(), newCA(n)); err != nil {
			t.Fatalf("create CA %s: %v", n, err)
		}
	}
}

func testCACreateAndGet(t *testing.T, s certauth.Store) {
	ctx := context.Background()
	want := newCA("root")
	got, err := s.CreateCACertificate(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	want.ETag = 1
	if got != want {
		t.Errorf("create result:\n got  %+v\n want %+v", got, want)
	}
	if got, err = s.CACertificate(ctx, "root"); err != nil || got != want {
		t.Errorf("round trip:\n got  %+v, %v\n want %+v", got, err, want)
	}
	if _, err := s.CACertificate(ctx, "nope"); !herd.IsCode(err, herd.ErrNotFound) {
		t.Errorf("unknown CA: %v, want NotFound", err)
	}
}

func testCACreateDuplicate(t *testing.T, s certauth.Store) {
	ctx := context.Background()
	createCA(t, s, "root")
	other := newCA("root")
	other.PEM, other.Verified = "other", true
	if _, err := s.CreateCACertificate(ctx, other); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Fatalf("duplicate create: %v, want PreconditionFailed", err)
	}
	if got, _ := s.CACertificate(ctx, "root"); got.PEM != caPEM || got.Verified {
		t.Errorf("a refused create changed the existing CA: %+v", got)
	}
}

func testCAList(t *testing.T, s certauth.Store) {
	ctx := context.Background()
	if got, err := s.CACertificates(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store lists %v, %v", got, err)
	}
	createCA(t, s, "b", "a", "c")
	got, err := s.CACertificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ca := range got {
		names = append(names, ca.Name)
	}
	if len(names) != 3 || names[0] != "a" || names[1] != "b" || names[2] != "c" {
		t.Errorf("listed %v, want [a b c] (name order)", names)
	}
}

func testCAUpdate(t *testing.T, s certauth.Store) {
	ctx := context.Background()
	createCA(t, s, "root")
	got, err := s.UpdateCACertificate(ctx, "root", func(ca *certauth.CA) error {
		if ca.ETag != 1 || ca.VerificationCode != "C0DEroot" {
			t.Errorf("change sees %+v", ca)
		}
		ca.Verified, ca.VerificationCode, ca.Updated = true, "", t0.Add(time.Hour)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := newCA("root")
	want.Verified, want.VerificationCode, want.Updated, want.ETag = true, "", t0.Add(time.Hour), 2
	if got != want {
		t.Errorf("update result:\n got  %+v\n want %+v", got, want)
	}
	if got, _ = s.CACertificate(ctx, "root"); got != want {
		t.Errorf("after update:\n got  %+v\n want %+v", got, want)
	}
	if _, err := s.UpdateCACertificate(ctx, "nope", func(*certauth.CA) error { return nil }); !herd.IsCode(err, herd.ErrNotFound) {
		t.Errorf("update unknown: %v, want NotFound", err)
	}
}

func testCAFailedUpdate(t *testing.T, s certauth.Store) {
	ctx := context.Background()
	createCA(t, s, "root")
	boom := herd.Errorf(herd.ErrPreconditionFailed, "etag")
	_, err := s.UpdateCACertificate(ctx, "root", func(ca *certauth.CA) error {
		ca.Verified = true
		return boom
	})
	if !errors.Is(err, boom) && !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Fatalf("failed change: %v, want its error", err)
	}
	if got, _ := s.CACertificate(ctx, "root"); got.Verified || got.ETag != 1 {
		t.Errorf("a failed change was written: %+v", got)
	}
}

func testCADelete(t *testing.T, s certauth.Store) {
	ctx := context.Background()
	createCA(t, s, "root", "other")
	refuse := herd.Errorf(herd.ErrPreconditionFailed, "etag")
	if err := s.DeleteCACertificate(ctx, "root", func(certauth.CA) error { return refuse }); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Fatalf("refused delete: %v", err)
	}
	if _, err := s.CACertificate(ctx, "root"); err != nil {
		t.Fatalf("a refused delete removed the CA: %v", err)
	}
	if err := s.DeleteCACertificate(ctx, "root", func(ca certauth.CA) error {
		if ca.Name != "root" {
			t.Errorf("check sees %+v", ca)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CACertificate(ctx, "root"); !herd.IsCode(err, herd.ErrNotFound) {
		t.Errorf("deleted CA: %v, want NotFound", err)
	}
	if _, err := s.CACertificate(ctx, "other"); err != nil {
		t.Errorf("the other CA went too: %v", err)
	}
	if err := s.DeleteCACertificate(ctx, "root", func(certauth.CA) error { return nil }); !herd.IsCode(err, herd.ErrNotFound) {
		t.Errorf("delete unknown: %v, want NotFound", err)
	}
}
