package auth

import (
	"context"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sas"
)

type memStore struct{ ps []Policy }

func (m *memStore) Policies(context.Context) ([]Policy, error)         { return m.ps, nil }
func (m *memStore) CreatePolicies(_ context.Context, p []Policy) error { m.ps = p; return nil }

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newService(t *testing.T) (*Service, *memStore) {
	t.Helper()
	st := &memStore{}
	s, err := NewService(context.Background(), st, "myhub.local", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

func TestDefaultPolicies(t *testing.T) {
	s, st := newService(t)
	want := map[string]Rights{
		"iothubowner":       RegistryRead | RegistryWrite | ServiceConnect | DeviceConnect,
		"service":           ServiceConnect,
		"device":            DeviceConnect,
		"registryRead":      RegistryRead,
		"registryReadWrite": RegistryRead | RegistryWrite,
	}
	if len(st.ps) != len(want) {
		t.Fatalf("created %d policies, want %d", len(st.ps), len(want))
	}
	for name, r := range want {
		p, ok := s.Policy(name)
		if !ok || p.Rights != r {
			t.Errorf("policy %s: %v %v, want rights %v", name, ok, p.Rights, r)
		}
		if len(p.PrimaryKey) != 44 || p.PrimaryKey == p.SecondaryKey {
			t.Errorf("policy %s keys %q %q: want two distinct 44-character keys", name, p.PrimaryKey, p.SecondaryKey)
		}
	}
	// A second start keeps the stored policies.
	s2, err := NewService(context.Background(), st, "myhub.local", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := s.Policy("service")
	p2, _ := s2.Policy("service")
	if p1 != p2 {
		t.Error("restart changed the policies")
	}
}

func token(t *testing.T, sr, policy, key string, exp time.Time) string {
	t.Helper()
	tok, err := sas.New(sr, key, policy, exp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAuthorizeService(t *testing.T) {
	s, _ := newService(t)
	owner, _ := s.Policy("iothubowner")
	read, _ := s.Policy("registryRead")
	later := now.Add(time.Hour)
	cases := []struct {
		name   string
		header string
		need   Rights
		device string
		ok     bool
	}{
		{"owner primary", token(t, "myhub.local", "iothubowner", owner.PrimaryKey, later), RegistryWrite, "", true},
		{"owner secondary", token(t, "myhub.local", "iothubowner", owner.SecondaryKey, later), RegistryWrite, "", true},
		{"host case and port", token(t, "MyHub.Local:443", "iothubowner", owner.PrimaryKey, later), ServiceConnect, "", true},
		{"device scoped", token(t, "myhub.local/devices/d1", "iothubowner", owner.PrimaryKey, later), ServiceConnect, "d1", true},
		{"device scoped other device", token(t, "myhub.local/devices/d1", "iothubowner", owner.PrimaryKey, later), ServiceConnect, "d2", false},
		{"device scoped prefix only", token(t, "myhub.local/devices/d1", "iothubowner", owner.PrimaryKey, later), ServiceConnect, "d10", false},
		{"read cannot write", token(t, "myhub.local", "registryRead", read.PrimaryKey, later), RegistryWrite, "", false},
		{"read can read", token(t, "myhub.local", "registryRead", read.PrimaryKey, later), RegistryRead | RegistryWrite, "", true},
		{"wrong key", token(t, "myhub.local", "iothubowner", read.PrimaryKey, later), RegistryRead, "", false},
		{"expired", token(t, "myhub.local", "iothubowner", owner.PrimaryKey, now.Add(-time.Second)), RegistryRead, "", false},
		{"expires now", token(t, "myhub.local", "iothubowner", owner.PrimaryKey, now), RegistryRead, "", false},
		{"other hub", token(t, "otherhub", "iothubowner", owner.PrimaryKey, later), RegistryRead, "", false},
		{"unknown policy", token(t, "myhub.local", "nope", owner.PrimaryKey, later), RegistryRead, "", false},
		{"device token", token(t, sas.DeviceResource("myhub.local", "d1"), "", owner.PrimaryKey, later), ServiceConnect, "d1", false},
		{"no header", "", RegistryRead, "", false},
		{"garbage", "Basic abc", RegistryRead, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.AuthorizeService(c.header, c.need, c.device)
			if c.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.ok && !herd.IsCode(err, herd.ErrUnauthorized) {
				t.Fatalf("got %v, want IotHubUnauthorizedAccess", err)
			}
		})
	}
}

func TestAuthenticateDevice(t *testing.T) {
	s, _ := newService(t)
	devPolicy, _ := s.Policy("device")
	svc, _ := s.Policy("service")
	keys := DeviceKeys{PrimaryKey: NewKey(), SecondaryKey: NewKey(), Enabled: true}
	later := now.Add(time.Hour)
	sr := sas.DeviceResource("myhub.local", "d1")
	cases := []struct {
		name, password, device string
		keys                   DeviceKeys
		ok                     bool
	}{
		{"primary", token(t, sr, "", keys.PrimaryKey, later), "d1", keys, true},
		{"secondary", token(t, sr, "", keys.SecondaryKey, later), "d1", keys, true},
		{"device policy", token(t, sr, "device", devPolicy.PrimaryKey, later), "d1", keys, true},
		{"policy without DeviceConnect", token(t, sr, "service", svc.PrimaryKey, later), "d1", keys, false},
		{"wrong key", token(t, sr, "", NewKey(), later), "d1", keys, false},
		{"expired", token(t, sr, "", keys.PrimaryKey, now.Add(-time.Minute)), "d1", keys, false},
		{"other device", token(t, sas.DeviceResource("myhub.local", "d2"), "", keys.PrimaryKey, later), "d1", keys, false},
		{"hub-wide device key", token(t, "myhub.local", "", keys.PrimaryKey, later), "d1", keys, false},
		// A device key signs for its own device only: sr=host/devices is a
		// segment prefix of host/devices/d1 but names no device.
		{"device key for all devices", token(t, "myhub.local%2Fdevices", "", keys.PrimaryKey, later), "d1", keys, false},
		{"device key for all devices, slash", token(t, "myhub.local%2Fdevices%2F", "", keys.PrimaryKey, later), "d1", keys, false},
		{"device key, plain sr for all devices", token(t, "myhub.local/devices", "", keys.PrimaryKey, later), "d1", keys, false},
		{"device key for one of its modules", token(t, "myhub.local%2Fdevices%2Fd1%2Fmodules%2Fm1", "", keys.PrimaryKey, later), "d1", keys, false},
		{"device key, trailing slash", token(t, "myhub.local%2Fdevices%2Fd1%2F", "", keys.PrimaryKey, later), "d1", keys, true},
		{"device key, device id with ? and =", token(t, sas.DeviceResource("myhub.local", "a?b=c"), "", keys.PrimaryKey, later), "a?b=c", keys, true},
		// A policy with DeviceConnect may cover many devices.
		{"device policy, bare host", token(t, "myhub.local", "device", devPolicy.PrimaryKey, later), "d1", keys, true},
		{"device policy, all devices", token(t, "myhub.local%2Fdevices", "device", devPolicy.PrimaryKey, later), "d1", keys, true},
		{"device policy, other device", token(t, sas.DeviceResource("myhub.local", "d2"), "device", devPolicy.PrimaryKey, later), "d1", keys, false},
		{"device policy, device id prefix", token(t, sas.DeviceResource("myhub.local", "d"), "device", devPolicy.PrimaryKey, later), "d1", keys, false},
		{"disabled", token(t, sr, "", keys.PrimaryKey, later), "d1", DeviceKeys{PrimaryKey: keys.PrimaryKey, SecondaryKey: keys.SecondaryKey}, false},
		// A device without symmetric keys (it uses a certificate) has no
		// key to sign with: HMAC with an empty key is anyone's.
		{"empty key", token(t, sr, "", "", later), "d1", DeviceKeys{Enabled: true, Type: "certificateAuthority"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exp, err := s.AuthenticateDevice(c.password, c.device, c.keys)
			if c.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !exp.Equal(later.Truncate(time.Second)) {
					t.Errorf("expiry %v, want %v", exp, later)
				}
				return
			}
			if !herd.IsCode(err, herd.ErrUnauthorized) {
				t.Fatalf("got %v, want IotHubUnauthorizedAccess", err)
			}
		})
	}
}
