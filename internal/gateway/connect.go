package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
)

// connect runs the CONNECT rules of §8.2 and §8.9 and answers CONNACK.
// It returns the keep-alive read timeout and whether the device is in.
//
// CONNACK codes: 1 for anything but MQTT 3.1.1; 2 for a client id that is
// neither a device id nor {deviceId}/{moduleId}; 4 for a user name that is not {host}/{clientId}/?…; 5 for a
// missing, malformed, expired or wrongly signed token, for a device that
// authenticates with an X.509 certificate and presented none or one that
// does not pass (see certauth.Service.Authenticate), and for an unknown or
// disabled device; 3 when the registry cannot be read. A malformed CONNECT
// (reserved bit, bad protocol name, U+0000 or bad UTF-8 in a string: see
// rules.go) is closed without CONNACK.
//
// How a device authenticates follows its registry entry (§1.4, §8.2): a
// sas device with a SAS token as its password; a selfSigned or
// certificateAuthority device with the client certificate of its TLS
// handshake (its password, which the SDKs leave empty, is ignored).
func (c *conn) connect(cp *packets.ConnectPacket) (time.Duration, bool) {
	log := c.s.cfg.Log
	refuse := func(code byte, why string) (time.Duration, bool) {
		log.Info("device connection refused", "device_id", cp.ClientIdentifier, "op", "connect",
			"err", why, "code", code)
		ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
		ack.ReturnCode = code
		// The refusal is written here, not queued: serve returns right
		// after, and over WebSocket the connection ends with the HTTP
		// handler, so a queued CONNACK could be lost and the device would
		// see a closed socket instead of "not authorized". Nothing else
		// writes before CONNACK.
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeWait))
		_, _ = c.nc.Write(encode(ack))
		c.close(reasonProtocol)
		if c.epoch != 0 {
			// Claimed, then refused: the claim recorded it Connected.
			c.s.cfg.Registry.RecordConnection(cp.ClientIdentifier, herd.Disconnected, c.s.cfg.Clock.Now(), c.epoch)
		}
		return 0, false
	}
	switch code := cp.Validate(); {
	case code == packets.ErrProtocolViolation:
		log.Info("malformed CONNECT", "device_id", cp.ClientIdentifier, "op", "connect")
		c.close(reasonProtocol)
		return 0, false
	case cp.ProtocolName != "MQTT" || cp.ProtocolVersion != 4:
		return refuse(packets.ErrRefusedBadProtocolVersion, "only MQTT 3.1.1 is supported")
	case code != packets.Accepted:
		return refuse(code, "invalid CONNECT")
	}
	id := cp.ClientIdentifier
	if !validIdentity(id) {
		return refuse(packets.ErrRefusedIDRejected, "the client id must be a device id, or {deviceId}/{moduleId} for a module")
	}
	if !cp.UsernameFlag {
		return refuse(packets.ErrRefusedBadUsernameOrPassword, "no user name")
	}
	if _, err := ParseUsername(cp.Username, c.s.cfg.Host, id); err != nil {
		return refuse(packets.ErrRefusedBadUsernameOrPassword, err.Error())
	}
	if cp.WillFlag {
		t, err := ParseTopic(id, cp.WillTopic)
		if err != nil || t.Kind != KindTelemetry || cp.WillQos > 1 {
			return refuse(packets.ErrRefusedNotAuthorised, "the Will must be a QoS 0 or 1 telemetry message of this device")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := c.s.cfg.Registry.Keys(ctx, id)
	if herd.IsCode(err, herd.ErrDeviceNotFound) || herd.IsCode(err, herd.ErrModuleNotFound) {
		return refuse(packets.ErrRefusedNotAuthorised, "unknown device or module")
	}
	if err != nil {
		log.Error("read device keys", "device_id", id, "err", err)
		return refuse(packets.ErrRefusedServerUnavailable, "registry unavailable")
	}
	var expires time.Time
	switch {
	case keys.UsesCertificate():
		chain := peerCertificates(c.nc)
		if c.s.cfg.Certificates == nil {
			return refuse(packets.ErrRefusedNotAuthorised, "X.509 authentication is not configured on this hub")
		}
		res, err := c.s.cfg.Certificates.Authenticate(ctx, id, keys, chain)
		if herd.ErrorCodeOf(err) == herd.ErrInternal {
			log.Error("authenticate device certificate", "device_id", id, "err", err)
			return refuse(packets.ErrRefusedServerUnavailable, "certificate store unavailable")
		}
		if err != nil {
			return refuse(packets.ErrRefusedNotAuthorised, herd.ErrorMessage(err))
		}
		c.chain, expires = chain, res.Expires
	case keys.Type == herd.AuthNone:
		return refuse(packets.ErrRefusedNotAuthorised, "device "+id+" has authentication type none: it cannot connect")
	default:
		if !cp.PasswordFlag || len(cp.Password) == 0 {
			return refuse(packets.ErrRefusedNotAuthorised, "no SAS token (the device uses sas authentication)")
		}
		da, err := c.s.cfg.Auth.VerifyDevice(string(cp.Password), id, keys)
		if err != nil {
			return refuse(packets.ErrRefusedNotAuthorised, herd.ErrorMessage(err))
		}
		c.key, expires = da.Key, da.Expires
	}

	if p := c.s.cfg.Presence; p != nil {
		// In a cluster the connection is claimed before anything is
		// written for it or told to the device: its epoch orders it
		// after every earlier connection of the device, on any node.
		c.epoch, err = p.Claim(ctx, id)
		if herd.IsCode(err, herd.ErrDeviceNotFound) || herd.IsCode(err, herd.ErrModuleNotFound) {
			return refuse(packets.ErrRefusedNotAuthorised, "unknown device or module")
		}
		if err != nil {
			log.Error("claim the device's connection", "device_id", id, "err", err)
			return refuse(packets.ErrRefusedServerUnavailable, "presence unavailable")
		}
		if ctx.Err() != nil {
			// Claimed too late: refuse records the claim Disconnected.
			return refuse(packets.ErrRefusedServerUnavailable, "presence too slow")
		}
	}
	c.deviceID, c.clean = id, cp.CleanSession
	_, mod := herd.SplitIdentity(id)
	c.module = mod != ""
	if cp.WillFlag {
		c.will = &packets.PublishPacket{TopicName: cp.WillTopic, Payload: cp.WillMessage}
	}
	// §8.3: a clean-session-0 device gets its stored subscriptions back,
	// from the connection it replaces if there is one; clean=1 discards.
	var subs bus.Feature
	present := false
	c.s.sessions.claim(id, c)
	if cp.CleanSession {
		if !c.s.sessions.waitWritten(c.s.sessions.discard(id, c.epoch), sessionSaveWait, c.s.done) {
			return refuse(packets.ErrRefusedServerUnavailable, "session store unavailable")
		}
	} else if prev, ok := c.s.cfg.Bus.Lookup(id).(*conn); ok && prev != nil && !prev.clean {
		// Taking over a persistent session; a clean=1 connection's
		// session ends with it (MQTT-3.1.2-6), and a device replacing one
		// that has not closed yet starts without a session.
		subs, present = prev.Features(), true
	} else {
		subs, present, err = c.s.sessions.load(ctx, id)
		if err != nil {
			log.Error("read device session", "device_id", id, "err", err)
			return refuse(packets.ErrRefusedServerUnavailable, "session store unavailable")
		}
	}
	c.features.Store(uint32(subs))
	now := c.s.cfg.Clock.Now()
	c.activity, c.connectedAt = now, now
	// The device is attached to the bus before its CONNACK leaves, so that
	// a method sent the moment the device sees CONNACK finds it online.
	// Holding the writer role meanwhile keeps anything routed to it in the
	// queue, behind the CONNACK.
	c.mu.Lock()
	c.writing = true
	c.mu.Unlock()
	if prev, ok := c.s.cfg.Bus.Attach(id, c).(*conn); ok && prev != nil {
		log.Info("device connected again; closing its previous connection", "device_id", id, "op", "takeover")
		prev.close(reasonTakeover)
	}
	if c.s.cfg.Attached != nil {
		c.s.cfg.Attached(id, now, c.epoch)
	}
	if c.chain != nil {
		c.s.trackCertificate(c, true) // before the recheck: see CertificatesChanged
	}
	if c.module {
		c.s.trackModule(c, true) // before the recheck, as for certificates
	}
	c.connackFirst(present)
	// A registry change that committed while this CONNECT was being
	// checked looked for the device before it was attached: check again.
	c.recheck(ctx)
	if c.chain != nil {
		c.expiry = c.s.cfg.Clock.AfterFunc(expires.Sub(now), func() {
			log.Info("device certificate expired; disconnecting", "device_id", id, "op", "certificate_expiry")
			c.close(reasonCertExpired)
		})
	} else {
		c.expiry = c.s.cfg.Clock.AfterFunc(expires.Sub(now), func() {
			log.Info("device token expired; disconnecting", "device_id", id, "op", "token_expiry")
			c.close(reasonTokenExpired)
		})
	}
	if c.epoch == 0 {
		// (A claimed connection is recorded Connected by its claim.)
		c.s.cfg.Registry.RecordConnection(id, herd.Connected, now, 0)
	}
	keepAlive := maxKeepAlive
	if cp.Keepalive > 0 {
		keepAlive = min(time.Duration(cp.Keepalive)*1500*time.Millisecond, maxKeepAlive)
	} else {
		tcpKeepAlive(c.nc)
	}
	return keepAlive, true
}

// tcpKeepAlive turns on TCP keep-alive probes, at Go's default pace (the
// first after 15 s of silence), on the socket under nc, if there is one:
// for a connection that asked for no MQTT keep-alive, so that a device
// that vanished without closing its socket is noticed within minutes
// rather than at maxKeepAlive. The hub's device listeners set none
// (hub.deviceListen): MQTT's keep-alive does that work for the others.
func tcpKeepAlive(nc net.Conn) {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	if t, ok := nc.(*net.TCPConn); ok {
		_ = t.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true})
	}
}

// connackFirst accepts the connection: it puts CONNACK at the front of the
// queue and hands the writer role, which connect holds, to a writer.
func (c *conn) connackFirst(sessionPresent bool) {
	ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
	ack.ReturnCode = packets.Accepted
	ack.SessionPresent = sessionPresent
	b := encode(ack)
	c.mu.Lock()
	c.queue = append([]outItem{{b: b}}, c.queue...)
	c.queued += len(b)
	c.mu.Unlock()
	c.flush()
}

// peerCertificates returns the client certificate chain of a TLS or
// WebSocket connection's handshake (leaf first), or nil.
func peerCertificates(nc net.Conn) []*x509.Certificate {
	switch t := nc.(type) {
	case *tls.Conn:
		return t.ConnectionState().PeerCertificates
	case interface{ PeerCertificates() []*x509.Certificate }:
		return t.PeerCertificates()
	}
	return nil
}
