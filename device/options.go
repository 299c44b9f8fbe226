package device

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Transport is how the client reaches the hub.
type Transport int

// Transports.
const (
	// TLS is MQTT over TLS, port 8883 unless the address names one.
	TLS Transport = iota
	// WebSocket is MQTT over secure WebSocket at
	// wss://{host}:443/$iothub/websocket.
	WebSocket
	// Plain is unencrypted MQTT, for load tests against a hub started with
	// --mqtt-plain-addr; it needs WithAddress.
	Plain
)

type options struct {
	transport     Transport
	address       string
	roots         *x509.CertPool
	clientCert    *tls.Certificate
	tokenValidity time.Duration
	renewMargin   time.Duration
	backoffMin    time.Duration
	backoffMax    time.Duration
	keepAlive     time.Duration
	opTimeout     time.Duration
	cleanSession  bool
	log           *slog.Logger
	now           func() time.Time
}

func defaults() options {
	return options{
		transport:     TLS,
		tokenValidity: time.Hour,
		renewMargin:   15 * time.Minute,
		backoffMin:    100 * time.Millisecond,
		backoffMax:    10 * time.Second,
		keepAlive:     4 * time.Minute,
		opTimeout:     30 * time.Second,
		log:           slog.New(slog.DiscardHandler),
		now:           time.Now,
	}
}

// Option configures a Client.
type Option func(*options) error

// WithTransport chooses TLS (the default), WebSocket or Plain.
func WithTransport(t Transport) Option {
	return func(o *options) error { o.transport = t; return nil }
}

// WithAddress dials addr ("host:port", or for WebSocket a base URL such as
// "wss://localhost:8443") instead of the connection string's
// GatewayHostName or HostName. The user name and token still name HostName.
func WithAddress(addr string) Option {
	return func(o *options) error { o.address = addr; return nil }
}

// WithCA trusts the PEM certificates (for example a Herd hub's ca.pem) in
// addition to the system's roots.
func WithCA(pemCerts []byte) Option {
	return func(o *options) error {
		if o.roots == nil {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			o.roots = pool
		}
		if !o.roots.AppendCertsFromPEM(pemCerts) {
			return errors.New("no PEM certificate found in the CA")
		}
		return nil
	}
}

// WithCAFile is WithCA with the certificates read from a file.
func WithCAFile(path string) Option {
	return func(o *options) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read CA: %w", err)
		}
		return WithCA(b)(o)
	}
}

// WithClientCertificate authenticates the device with an X.509 client
// certificate (and its key) in the TLS handshake, for a device registered
// with selfSigned or certificateAuthority authentication and a
// connection string with x509=true instead of a key. It works over TLS
// and WebSocket. Include intermediate CA certificates in cert.Certificate
// after the device's own, as crypto/tls expects.
func WithClientCertificate(cert tls.Certificate) Option {
	return func(o *options) error {
		if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
			return errors.New("the client certificate has no certificate or no private key")
		}
		o.clientCert = &cert
		return nil
	}
}

// WithClientCertificateFiles is WithClientCertificate with the certificate
// (PEM, the device's first, then any intermediates) and its private key
// read from files, such as those `herd cert device` writes.
func WithClientCertificateFiles(certFile, keyFile string) Option {
	return func(o *options) error {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("load client certificate: %w", err)
		}
		return WithClientCertificate(cert)(o)
	}
}

// WithTokenRenewal sets how long each SAS token is valid (default 1 h) and
// how long before expiry the client renews it by reconnecting (default
// 15 min), as the Azure SDKs do.
func WithTokenRenewal(validity, margin time.Duration) Option {
	return func(o *options) error {
		if validity <= 0 || margin < 0 || margin >= validity {
			return fmt.Errorf("token validity %s and renewal margin %s: need 0 ≤ margin < validity", validity, margin)
		}
		o.tokenValidity, o.renewMargin = validity, margin
		return nil
	}
}

// WithBackoff bounds the exponential back-off (with jitter) between
// reconnection attempts; defaults 100 ms and 10 s.
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) error {
		if min <= 0 || max < min {
			return fmt.Errorf("back-off %s..%s: need 0 < min ≤ max", min, max)
		}
		o.backoffMin, o.backoffMax = min, max
		return nil
	}
}

// WithKeepAlive sets the MQTT keep-alive (default 4 min).
func WithKeepAlive(d time.Duration) Option {
	return func(o *options) error { o.keepAlive = d; return nil }
}

// WithCleanSession asks the hub to discard the device's stored
// subscriptions on every connect (default false: they persist).
func WithCleanSession(clean bool) Option {
	return func(o *options) error { o.cleanSession = clean; return nil }
}

// WithLogger logs connection events (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithClock signs tokens with the given clock (tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) error { o.now = now; return nil }
}
