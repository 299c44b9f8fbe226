package hub_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/store"
)

// TestOwnCertificate serves the user's certificate instead of generating a
// CA in the data folder.
func TestOwnCertificate(t *testing.T) {
	own := t.TempDir()
	if _, err := certs.Local(own, "own.example"); err != nil {
		t.Fatal(err)
	}
	h := hubtest.Start(t, hubtest.WithConfig(func(c *hub.Config) {
		c.TLSCert = filepath.Join(own, "server.pem")
		c.TLSKey = filepath.Join(own, "server-key.pem")
	}))
	if h.CAFile() != "" {
		t.Errorf("CAFile = %q with the user's own certificate", h.CAFile())
	}
	if _, err := os.Stat(filepath.Join(h.Dir, certs.CAFile)); !os.IsNotExist(err) {
		t.Errorf("a CA was generated although a certificate was given: %v", err)
	}
	conn, err := tls.Dial("tcp", h.HTTPSAddr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "own.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if leaf.VerifyHostname("own.example") != nil {
		t.Errorf("served certificate is not the user's: %v", leaf.DNSNames)
	}
	if conn.ConnectionState().Version < tls.VersionTLS12 {
		t.Error("TLS older than 1.2")
	}
}

func TestValidate(t *testing.T) {
	base := hub.Default()
	for name, mut := range map[string]func(*hub.Config){
		"store":           func(c *hub.Config) { c.Store = nil },
		"data":            func(c *hub.Config) { c.DataDir = "" },
		"hostname":        func(c *hub.Config) { c.Hostname = "" },
		"tls-key":         func(c *hub.Config) { c.TLSCert = "x.pem" },
		"max-connections": func(c *hub.Config) { c.MaxConnections = -1 },
	} {
		c := base
		st, err := store.Open(context.Background(), "", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c.Store = st
		mut(&c)
		if _, err := hub.New(context.Background(), c); err == nil {
			t.Errorf("%s: invalid config accepted", name)
		}
	}
}
