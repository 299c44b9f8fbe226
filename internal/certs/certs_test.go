package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestLocalCreatesReusesAndReissues(t *testing.T) {
	dir := t.TempDir()
	c1, err := Local(dir, "hub.example")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	leaf, _ := x509.ParseCertificate(c1.Certificate[0])
	for _, host := range []string{"hub.example", "localhost", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("certificate not valid for %s: %v", host, err)
		}
	}
	c2, err := Local(dir, "hub.example")
	if err != nil {
		t.Fatal(err)
	}
	if string(c2.Certificate[0]) != string(c1.Certificate[0]) {
		t.Error("a second start issued a new certificate for the same host")
	}
	c3, err := Local(dir, "other.example")
	if err != nil {
		t.Fatal(err)
	}
	leaf3, _ := x509.ParseCertificate(c3.Certificate[0])
	if _, err := leaf3.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err != nil {
		t.Errorf("new host name: %v (the CA must stay the same)", err)
	}
	if info, err := os.Stat(filepath.Join(dir, "ca-key.pem")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("CA key file: %v %v", err, info)
	}
}
