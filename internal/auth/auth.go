// Package auth owns Herd's access control: the shared access policies and
// their permissions, and the verification of SAS tokens presented by
// back-end applications (REST) and devices (MQTT CONNECT).
//
// Verification follows §2.5 of the compatibility reference: the HMAC covers
// the literal sr text, both keys of the policy or device are tried, the
// expiry is checked against an injected clock, and the decoded sr must be a
// path-segment prefix of the resource being accessed; a token signed with
// a device's own key must name exactly that device.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sas"
)

// Rights is a set of IoT Hub permissions.
type Rights uint8

// The four permissions of Azure IoT Hub.
const (
	RegistryRead Rights = 1 << iota
	RegistryWrite
	ServiceConnect
	DeviceConnect
)

var rightNames = []struct {
	r    Rights
	name string
}{
	{RegistryRead, "RegistryRead"},
	{RegistryWrite, "RegistryWrite"},
	{ServiceConnect, "ServiceConnect"},
	{DeviceConnect, "DeviceConnect"},
}

// String lists the rights as Azure names them, comma separated.
func (r Rights) String() string {
	var names []string
	for _, n := range rightNames {
		if r&n.r != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ", ")
}

// Has reports whether r includes every right in need.
func (r Rights) Has(need Rights) bool { return r&need == need }

// Any reports whether r includes at least one right in need.
func (r Rights) Any(need Rights) bool { return r&need != 0 }

// Policy is a shared access policy: a name, two keys and its rights.
type Policy struct {
	Name         string
	PrimaryKey   string
	SecondaryKey string
	Rights       Rights
}

// DefaultPolicies returns the five policies a new Azure IoT hub gets, with
// fresh random keys.
func DefaultPolicies() []Policy {
	specs := []struct {
		name   string
		rights Rights
	}{
		{"iothubowner", RegistryRead | RegistryWrite | ServiceConnect | DeviceConnect},
		{"service", ServiceConnect},
		{"device", DeviceConnect},
		{"registryRead", RegistryRead},
		{"registryReadWrite", RegistryRead | RegistryWrite},
	}
	out := make([]Policy, len(specs))
	for i, s := range specs {
		out[i] = Policy{Name: s.name, PrimaryKey: NewKey(), SecondaryKey: NewKey(), Rights: s.rights}
	}
	return out
}

// NewKey returns a new random 256-bit key in base64 (44 characters), the
// form Azure issues.
func NewKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return base64.StdEncoding.EncodeToString(b)
}

// Store keeps the hub's policies.
type Store interface {
	Policies(ctx context.Context) ([]Policy, error)
	CreatePolicies(ctx context.Context, p []Policy) error
}

// Service verifies tokens against the hub's policies.
type Service struct {
	host string
	now  func() time.Time

	mu       sync.RWMutex
	policies map[string]Policy
}

// NewService loads the policies from store, creating the default set on a
// new hub. host is the hub's host name, which every token's sr must name.
func NewService(ctx context.Context, store Store, host string, now func() time.Time) (*Service, error) {
	ps, err := store.Policies(ctx)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	if len(ps) == 0 {
		ps = DefaultPolicies()
		if err := store.CreatePolicies(ctx, ps); err != nil {
			return nil, fmt.Errorf("create default policies: %w", err)
		}
	}
	s := &Service{host: host, now: now, policies: map[string]Policy{}}
	for _, p := range ps {
		s.policies[p.Name] = p
	}
	return s, nil
}

// Host returns the hub's host name.
func (s *Service) Host() string { return s.host }

// Policy returns the named policy.
func (s *Service) Policy(name string) (Policy, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.policies[name]
	return p, ok
}

// ConnectionString returns the service connection string of a policy.
func (s *Service) ConnectionString(policy string) (string, error) {
	p, ok := s.Policy(policy)
	if !ok {
		return "", herd.Errorf(herd.ErrNotFound, "no shared access policy named %q", policy)
	}
	return sas.ConnectionString{HostName: s.host, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}.String(), nil
}

func unauthorized(format string, args ...any) error {
	return herd.Errorf(herd.ErrUnauthorized, format, args...)
}

// AuthorizeService checks the Authorization header of a REST request: a
// policy-signed token for this hub, not expired, whose policy has at least
// one of the rights in need. deviceID is the device the request addresses,
// or "" for hub-wide operations; a token scoped to one device covers only
// that device. It returns the policy on success and an ErrUnauthorized
// error otherwise.
func (s *Service) AuthorizeService(header string, need Rights, deviceID string) (Policy, error) {
	if header == "" {
		return Policy{}, unauthorized("the request has no Authorization header")
	}
	tok, err := sas.Parse(header)
	if err != nil {
		return Policy{}, unauthorized("malformed SharedAccessSignature: %v", err)
	}
	if tok.KeyName == "" {
		return Policy{}, unauthorized("a token signed with a device key cannot call the service API; use a shared access policy")
	}
	s.mu.RLock()
	p, ok := s.policies[tok.KeyName]
	s.mu.RUnlock()
	if !ok {
		return Policy{}, unauthorized("no shared access policy named %q", tok.KeyName)
	}
	if !tok.Verify(p.PrimaryKey) && !tok.Verify(p.SecondaryKey) {
		return Policy{}, unauthorized("the token's signature does not match policy %q", p.Name)
	}
	if err := s.checkExpiry(tok); err != nil {
		return Policy{}, err
	}
	if err := s.checkScope(tok, deviceID); err != nil {
		return Policy{}, err
	}
	if err := p.Require(need, "this operation"); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Require returns nil if the policy has at least one of the rights in
// need, and otherwise an ErrUnauthorized error saying what op needs.
func (p Policy) Require(need Rights, op string) error {
	if p.Rights.Any(need) {
		return nil
	}
	have := p.Rights.String()
	if have == "" {
		have = "no rights"
	}
	return unauthorized("policy %q has %s; %s needs %s", p.Name, have, op, anyOf(need))
}

func anyOf(r Rights) string {
	return strings.ReplaceAll(r.String(), ", ", " or ")
}

func (s *Service) checkExpiry(tok sas.Token) error {
	exp, err := tok.ExpiresAt()
	if err != nil {
		return unauthorized("%v", err)
	}
	if !s.now().Before(exp) {
		return unauthorized("the token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkScope checks that the decoded sr is this hub (host compared
// case-insensitively, a :port tolerated), optionally followed by a path that
// is a segment prefix of devices/{deviceID}.
func (s *Service) checkScope(tok sas.Token, deviceID string) error {
	sr, err := tok.DecodedResource()
	if err != nil {
		return unauthorized("sr is not percent-encoded correctly")
	}
	host, path, _ := strings.Cut(strings.TrimSuffix(sr, "/"), "/")
	if !s.sameHost(host) {
		return unauthorized("the token is for %q, not for this hub (%q)", host, s.host)
	}
	if path == "" {
		return nil
	}
	if deviceID != "" && isSegmentPrefix(path, "devices/"+deviceID) {
		return nil
	}
	return unauthorized("the token is scoped to %q and does not cover this request", sr)
}

func (s *Service) sameHost(host string) bool {
	if strings.EqualFold(host, s.host) {
		return true
	}
	h, port, ok := strings.Cut(host, ":")
	return ok && port != "" && strings.EqualFold(h, s.host)
}

func isSegmentPrefix(prefix, path string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// DeviceKeys are the credentials of one device, as the registry holds them.
type DeviceKeys struct {
	PrimaryKey   string
	SecondaryKey string
	Enabled      bool
	// Type is the device's authentication type (herd.AuthSAS,
	// AuthSelfSigned, AuthCertificateAuthority or AuthNone).
	Type string
	// PrimaryThumbprint and SecondaryThumbprint are a selfSigned device's
	// certificate thumbprints (hex SHA-1 or SHA-256, either case), or "".
	PrimaryThumbprint, SecondaryThumbprint string
}

// UsesCertificate reports whether the device authenticates with an X.509
// certificate (selfSigned or certificateAuthority) rather than SAS tokens.
func (k DeviceKeys) UsesCertificate() bool {
	return k.Type == herd.AuthSelfSigned || k.Type == herd.AuthCertificateAuthority
}

// AuthenticateDevice checks the SAS token a device presents as its MQTT
// password: signed with the device's own key (no skn) or with a policy that
// has DeviceConnect, for this hub and this device, not expired. It returns
// the token's expiry so the gateway can disconnect the device when it runs
// out.
func (s *Service) AuthenticateDevice(password, deviceID string, keys DeviceKeys) (time.Time, error) {
	da, err := s.VerifyDevice(password, deviceID, keys)
	return da.Expires, err
}

// DeviceAuth is the outcome of a successful device authentication.
type DeviceAuth struct {
	// Expires is when the token runs out.
	Expires time.Time
	// Key is the device key that signed the token ("" for a policy), so
	// that a live connection can be closed when that key is replaced.
	Key string
}

// VerifyDevice is AuthenticateDevice, also saying which key signed.
func (s *Service) VerifyDevice(password, deviceID string, keys DeviceKeys) (DeviceAuth, error) {
	exp, key, err := s.verifyDevice(password, deviceID, keys)
	return DeviceAuth{Expires: exp, Key: key}, err
}

func (s *Service) verifyDevice(password, deviceID string, keys DeviceKeys) (time.Time, string, error) {
	tok, err := sas.Parse(password)
	if err != nil {
		return time.Time{}, "", unauthorized("malformed SharedAccessSignature: %v", err)
	}
	var ok bool
	var used string
	if tok.KeyName == "" {
		// An empty key (a device without symmetric keys) signs nothing:
		// HMAC with an empty key is computable by anyone.
		switch {
		case keys.PrimaryKey != "" && tok.Verify(keys.PrimaryKey):
			ok, used = true, keys.PrimaryKey
		case keys.SecondaryKey != "" && tok.Verify(keys.SecondaryKey):
			ok, used = true, keys.SecondaryKey
		}
	} else {
		s.mu.RLock()
		p, found := s.policies[tok.KeyName]
		s.mu.RUnlock()
		if !found || !p.Rights.Has(DeviceConnect) {
			return time.Time{}, "", unauthorized("policy %q cannot connect devices", tok.KeyName)
		}
		ok = tok.Verify(p.PrimaryKey) || tok.Verify(p.SecondaryKey)
	}
	if !ok {
		return time.Time{}, "", unauthorized("the token's signature does not match the keys of device %q", deviceID)
	}
	if err := s.checkExpiry(tok); err != nil {
		return time.Time{}, "", err
	}
	sr, err := url.PathUnescape(tok.Resource)
	if err != nil {
		return time.Time{}, "", unauthorized("sr is not percent-encoded correctly")
	}
	host, path, _ := strings.Cut(sr, "/")
	if !s.sameHost(host) {
		return time.Time{}, "", unauthorized("the token is for %q, not for this hub (%q)", host, s.host)
	}
	// A policy token may cover many devices (the bare host, host/devices,
	// §2.5 step 6); a token signed with a device key names exactly that
	// device (§2.3, §2.5 step 7): host/devices is a prefix of the device's
	// resource but nothing the device owns.
	own := "devices/" + deviceID
	if dev, mod := herd.SplitIdentity(deviceID); mod != "" {
		own = "devices/" + dev + "/modules/" + mod
	}
	path = strings.TrimSuffix(path, "/")
	switch {
	case tok.KeyName == "" && path != own:
		return time.Time{}, "", unauthorized("a device token must name its device in sr (%s/%s), not %q", host, own, sr)
	case tok.KeyName != "" && path != "" && !isSegmentPrefix(path, own):
		return time.Time{}, "", unauthorized("the token is for %q, not for device %q", sr, deviceID)
	}
	if !keys.Enabled {
		return time.Time{}, "", unauthorized("device %q is disabled", deviceID)
	}
	exp, _ := tok.ExpiresAt()
	return exp, used, nil
}
