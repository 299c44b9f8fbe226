package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/sas"
)

// rawClient is a bare MQTT client on the paho codec, for protocol edges
// that a real device SDK would never produce.
type rawClient struct {
	t   testing.TB
	nc  net.Conn
	r   *bufio.Reader
	ids uint16
}

func dialPlain(t testing.TB, h *hubtest.Hub) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", h.MQTTPlainAddr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func dialTLS(t testing.TB, h *hubtest.Hub) *rawClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	nc, err := tls.Dial("tcp", h.MQTTAddr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("dial TLS: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *rawClient) send(p packets.ControlPacket) {
	c.t.Helper()
	if err := p.Write(c.nc); err != nil {
		c.t.Fatalf("write %s: %v", p, err)
	}
}

// sendRaw writes bytes as they are, in one write: for packets the codec
// would not produce.
func (c *rawClient) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// encodePacket returns the bytes of p on the wire.
func encodePacket(t testing.TB, p packets.ControlPacket) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatalf("encode %s: %v", p, err)
	}
	return b.Bytes()
}

// read returns the next packet, failing the test after 10 s.
func (c *rawClient) read() packets.ControlPacket {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := packets.ReadPacket(c.r)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

// expectClosed waits for the hub to close the connection.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		p, err := packets.ReadPacket(c.r)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("connection still open")
			}
			return
		}
		if _, ok := p.(*packets.PublishPacket); !ok {
			c.t.Fatalf("expected the connection to close, got %s", p)
		}
	}
}

func connectPacket(id, username, password string, clean bool) *packets.ConnectPacket {
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.ClientIdentifier = id
	cp.CleanSession = clean
	cp.Keepalive = 60
	if username != "" {
		cp.UsernameFlag, cp.Username = true, username
	}
	if password != "" {
		cp.PasswordFlag, cp.Password = true, []byte(password)
	}
	return cp
}

func (c *rawClient) connectWith(cp *packets.ConnectPacket) *packets.ConnackPacket {
	c.t.Helper()
	c.send(cp)
	p := c.read()
	ack, ok := p.(*packets.ConnackPacket)
	if !ok {
		c.t.Fatalf("expected CONNACK, got %s", p)
	}
	return ack
}

// device is a registered device and how to sign its tokens.
type device struct {
	id, key string
	h       *hubtest.Hub
}

func newDevice(t testing.TB, h *hubtest.Hub, id string) device {
	t.Helper()
	d, err := h.Service.CreateDevice(context.Background(), herd.Device{DeviceID: id})
	if err != nil {
		t.Fatalf("create device %q: %v", id, err)
	}
	return device{id: id, key: d.Authentication.SymmetricKey.PrimaryKey, h: h}
}

func (d device) username() string {
	return d.h.Hostname() + "/" + d.id + "/?api-version=2021-04-12&DeviceClientType=raw-test"
}

func (d device) token(exp time.Time) string {
	tok, err := sas.DeviceToken(d.h.Hostname(), d.id, "", d.key, exp)
	if err != nil {
		panic(err)
	}
	return tok
}

// connect connects d on c with a one-hour token and expects acceptance.
func (c *rawClient) connect(d device, clean bool, now time.Time) *packets.ConnackPacket {
	c.t.Helper()
	ack := c.connectWith(connectPacket(d.id, d.username(), d.token(now.Add(time.Hour)), clean))
	if ack.ReturnCode != 0 {
		c.t.Fatalf("CONNACK %d for %s", ack.ReturnCode, d.id)
	}
	return ack
}

func (c *rawClient) subscribe(filters ...string) *packets.SubackPacket {
	c.t.Helper()
	c.ids++
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID = c.ids
	sp.Topics = filters
	sp.Qoss = make([]byte, len(filters))
	c.send(sp)
	p := c.read()
	ack, ok := p.(*packets.SubackPacket)
	if !ok {
		c.t.Fatalf("expected SUBACK, got %s", p)
	}
	return ack
}

func (c *rawClient) unsubscribe(filters ...string) {
	c.t.Helper()
	c.ids++
	up := packets.NewControlPacket(packets.Unsubscribe).(*packets.UnsubscribePacket)
	up.MessageID = c.ids
	up.Topics = filters
	c.send(up)
	if p := c.read(); p == nil {
		c.t.Fatal("no UNSUBACK")
	} else if _, ok := p.(*packets.UnsubackPacket); !ok {
		c.t.Fatalf("expected UNSUBACK, got %s", p)
	}
}

func (c *rawClient) publish(topic string, qos byte, payload []byte) {
	c.t.Helper()
	pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pp.TopicName, pp.Qos, pp.Payload = topic, qos, payload
	if qos > 0 {
		c.ids++
		pp.MessageID = c.ids
	}
	c.send(pp)
}

// nextPublish reads packets until a PUBLISH arrives.
func (c *rawClient) nextPublish() *packets.PublishPacket {
	c.t.Helper()
	for {
		p := c.read()
		if pp, ok := p.(*packets.PublishPacket); ok {
			return pp
		}
	}
}

// ping sends PINGREQ and expects PINGRESP as the very next packet, which
// proves nothing else was queued for this connection before it.
func (c *rawClient) ping() {
	c.t.Helper()
	c.send(packets.NewControlPacket(packets.Pingreq))
	if p := c.read(); !isPingresp(p) {
		c.t.Fatalf("expected PINGRESP, got %s", p)
	}
}

func isPingresp(p packets.ControlPacket) bool {
	_, ok := p.(*packets.PingrespPacket)
	return ok
}

var _ = io.EOF
