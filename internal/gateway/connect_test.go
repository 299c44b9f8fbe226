package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/clock"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/sas"
)

func TestConnectRefusals(t *testing.T) {
	h := hubtest.Start(t)
	now := time.Now()
	d := newDevice(t, h, "dev1")
	other := newDevice(t, h, "dev2")
	disabled := newDevice(t, h, "off")
	ctx := context.Background()
	dd, err := h.Service.GetDevice(ctx, disabled.id)
	if err != nil {
		t.Fatal(err)
	}
	dd.Status = herd.DeviceDisabled
	if _, err := h.Service.UpdateDevice(ctx, *dd, "*"); err != nil {
		t.Fatal(err)
	}
	good := d.token(now.Add(time.Hour))
	// Signed with dev1's own key, but for sr=host/devices: a prefix of the
	// device's resource that names no device.
	allDevices, err := sas.New(sas.EncodeStrict(h.Hostname()+"/devices"), d.key, "", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cp   *packets.ConnectPacket
		code byte
	}{
		{"wrong key", connectPacket(d.id, d.username(), other.token(now.Add(time.Hour)), false), packets.ErrRefusedNotAuthorised},
		{"expired token", connectPacket(d.id, d.username(), d.token(now.Add(-time.Minute)), false), packets.ErrRefusedNotAuthorised},
		{"token of another device", connectPacket(d.id, d.username(), device{id: other.id, key: d.key, h: h}.token(now.Add(time.Hour)), false), packets.ErrRefusedNotAuthorised},
		{"unknown device", connectPacket("ghost", h.Hostname()+"/ghost/?api-version=2021-04-12", good, false), packets.ErrRefusedNotAuthorised},
		{"disabled device", connectPacket(disabled.id, disabled.username(), disabled.token(now.Add(time.Hour)), false), packets.ErrRefusedNotAuthorised},
		{"device key token for all devices", connectPacket(d.id, d.username(), allDevices, false), packets.ErrRefusedNotAuthorised},
		{"garbage password", connectPacket(d.id, d.username(), "hello", false), packets.ErrRefusedNotAuthorised},
		{"no password", connectPacket(d.id, d.username(), "", false), packets.ErrRefusedNotAuthorised},
		{"client id does not match user name", connectPacket(other.id, d.username(), other.token(now.Add(time.Hour)), false), packets.ErrRefusedBadUsernameOrPassword},
		{"user name for another hub", connectPacket(d.id, "elsewhere/dev1/?api-version=2021-04-12", good, false), packets.ErrRefusedBadUsernameOrPassword},
		{"no user name", connectPacket(d.id, "", "", false), packets.ErrRefusedBadUsernameOrPassword},
		{"unknown module", connectPacket(d.id+"/m1", h.Hostname()+"/dev1/m1/?api-version=2021-04-12", good, false), packets.ErrRefusedNotAuthorised},
		{"bad module id", connectPacket(d.id+"/m 1", h.Hostname()+"/dev1/m 1/?api-version=2021-04-12", good, false), packets.ErrRefusedIDRejected},
		{"module id with a slash", connectPacket(d.id+"/m/1", h.Hostname()+"/dev1/m/1/?api-version=2021-04-12", good, false), packets.ErrRefusedIDRejected},
		{"empty client id", connectPacket("", d.username(), good, true), packets.ErrRefusedIDRejected},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialPlain(t, h)
			ack := c.connectWith(tc.cp)
			if ack.ReturnCode != tc.code {
				t.Fatalf("CONNACK %d, want %d", ack.ReturnCode, tc.code)
			}
			if ack.SessionPresent {
				t.Fatalf("sessionPresent on a refused connection")
			}
			c.expectClosed()
		})
	}
	t.Run("MQTT 3.1", func(t *testing.T) {
		c := dialPlain(t, h)
		cp := connectPacket(d.id, d.username(), good, false)
		cp.ProtocolName, cp.ProtocolVersion = "MQIsdp", 3
		if ack := c.connectWith(cp); ack.ReturnCode != packets.ErrRefusedBadProtocolVersion {
			t.Fatalf("CONNACK %d, want 1", ack.ReturnCode)
		}
		c.expectClosed()
	})
	t.Run("first packet not CONNECT", func(t *testing.T) {
		c := dialPlain(t, h)
		c.send(packets.NewControlPacket(packets.Pingreq))
		c.expectClosed()
	})
	t.Run("accepted over TLS with port in user name", func(t *testing.T) {
		c := dialTLS(t, h)
		ack := c.connectWith(connectPacket(d.id, "LOCALHOST:8883/dev1/?api-version=2021-04-12", good, true))
		if ack.ReturnCode != 0 {
			t.Fatalf("CONNACK %d", ack.ReturnCode)
		}
		c.ping()
	})
}

// A device id may contain '?' and '=' (§3.7); the user name must not be
// split on its first '?'.
func TestConnectDeviceIDWithQuestionMark(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "a?b=c")
	c := dialPlain(t, h)
	c.connect(d, true, time.Now())
	c.ping()
}

func TestTakeover(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	first := dialPlain(t, h)
	first.connect(d, false, time.Now())
	first.subscribe("$iothub/methods/POST/#")
	second := dialPlain(t, h)
	if ack := second.connect(d, false, time.Now()); !ack.SessionPresent {
		t.Fatalf("the new connection should take over the session")
	}
	first.expectClosed()
	second.ping()
	// The session moved with the takeover: methods reach the new connection.
	done := invokeAsync(t, h, d.id, herd.MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: 30})
	answer(t, second, 200, `{"ok":true}`)
	if r := <-done; r.err != nil || r.res.Status != 200 {
		t.Fatalf("invoke after takeover: %+v", r)
	}
	if n := h.Bus.Connected(); n != 1 {
		t.Fatalf("%d devices connected, want 1", n)
	}
}

func TestTokenExpiryDisconnects(t *testing.T) {
	fake := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := hubtest.Start(t, hubtest.WithFakeClock(fake))
	d := newDevice(t, h, "dev1")
	c := dialPlain(t, h)
	ack := c.connectWith(connectPacket(d.id, d.username(), d.token(fake.Now().Add(time.Minute)), false))
	if ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReturnCode)
	}
	c.ping()
	fake.Advance(59 * time.Second)
	c.ping() // still alive one second before expiry
	fake.Advance(2 * time.Second)
	c.expectClosed()
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "device still connected")
	// A renewed token (what the SDKs do) gets back in, with the session.
	c2 := dialPlain(t, h)
	c2.connect(d, false, fake.Now())
}

func TestConnectionStateFollowsReality(t *testing.T) {
	h := hubtest.Start(t)
	d := newDevice(t, h, "dev1")
	ctx := context.Background()
	state := func() herd.ConnectionState {
		dev, err := h.Service.GetDevice(ctx, d.id)
		if err != nil {
			t.Fatal(err)
		}
		return dev.ConnectionState
	}
	c := dialPlain(t, h)
	c.connect(d, true, time.Now())
	hubtest.Eventually(t, 10*time.Second, func() bool { return state() == herd.Connected }, "not Connected")
	dev, _ := h.Service.GetDevice(ctx, d.id)
	if dev.LastActivityTime.IsZero() || dev.ConnectionStateUpdatedTime.IsZero() {
		t.Fatalf("activity and state times not recorded: %+v", dev)
	}
	stats, err := h.Service.ServiceStatistics(ctx)
	if err != nil || stats.ConnectedDeviceCount != 1 {
		t.Fatalf("service statistics %+v, %v", stats, err)
	}
	c.send(packets.NewControlPacket(packets.Disconnect))
	c.expectClosed()
	hubtest.Eventually(t, 10*time.Second, func() bool { return state() == herd.Disconnected }, "not Disconnected")
}

func TestRegistryChangesDisconnect(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	t.Run("deleted", func(t *testing.T) {
		d := newDevice(t, h, "del")
		c := dialPlain(t, h)
		c.connect(d, true, time.Now())
		if err := h.Service.DeleteDevice(ctx, d.id, "*"); err != nil {
			t.Fatal(err)
		}
		c.expectClosed()
	})
	t.Run("disabled", func(t *testing.T) {
		d := newDevice(t, h, "dis")
		c := dialPlain(t, h)
		c.connect(d, true, time.Now())
		dev, _ := h.Service.GetDevice(ctx, d.id)
		dev.Status = herd.DeviceDisabled
		if _, err := h.Service.UpdateDevice(ctx, *dev, "*"); err != nil {
			t.Fatal(err)
		}
		c.expectClosed()
	})
	t.Run("key replaced", func(t *testing.T) {
		d := newDevice(t, h, "rekey")
		c := dialPlain(t, h)
		c.connect(d, true, time.Now())
		dev, _ := h.Service.GetDevice(ctx, d.id)
		dev.Authentication.SymmetricKey.PrimaryKey = "" // the hub generates a new one
		dev.Authentication.SymmetricKey.PrimaryKey = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
		if _, err := h.Service.UpdateDevice(ctx, *dev, "*"); err != nil {
			t.Fatal(err)
		}
		c.expectClosed()
	})
	t.Run("other key replaced keeps the connection", func(t *testing.T) {
		d := newDevice(t, h, "keep")
		c := dialPlain(t, h)
		c.connect(d, true, time.Now())
		dev, _ := h.Service.GetDevice(ctx, d.id)
		dev.Authentication.SymmetricKey.SecondaryKey = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
		dev.StatusReason = nil
		if _, err := h.Service.UpdateDevice(ctx, *dev, "*"); err != nil {
			t.Fatal(err)
		}
		// The recheck runs after the update; a twin GET answered after it
		// proves the connection survived.
		hubtest.Eventually(t, 5*time.Second, func() bool {
			k, err := h.Registry.Keys(ctx, d.id)
			return err == nil && k.SecondaryKey == dev.Authentication.SymmetricKey.SecondaryKey
		}, "keys not reloaded")
		c.ping()
	})
}
