package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd/internal/hubtest"
)

// dialWS opens MQTT over secure WebSocket at /$iothub/websocket on the
// hub's HTTPS listener, as the Node SDK's MqttWs transport does.
func dialWS(t testing.TB, h *hubtest.Hub) *rawClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "wss://" + strings.Replace(h.HTTPSAddr().String(), "127.0.0.1", "localhost", 1) + "/$iothub/websocket"
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"mqtt"}})
	if err != nil {
		t.Fatalf("dial WebSocket: %v", err)
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// A refused CONNECT over WebSocket gets its CONNACK before the connection
// closes, as over TCP: the Node SDK reports "Connection refused: Not
// authorized" only if the CONNACK arrives (found by compat/node, where
// MqttWs saw the socket close first).
func TestConnectRefusedOverWebSocket(t *testing.T) {
	h := hubtest.Start(t)
	now := time.Now()
	d := newDevice(t, h, "wsdev")
	other := newDevice(t, h, "wsother")
	for range 20 { // the lost CONNACK was a race; try it often
		c := dialWS(t, h)
		ack := c.connectWith(connectPacket(d.id, d.username(), other.token(now.Add(time.Hour)), false))
		if ack.ReturnCode != packets.ErrRefusedNotAuthorised {
			t.Fatalf("CONNACK %d, want %d", ack.ReturnCode, packets.ErrRefusedNotAuthorised)
		}
		c.expectClosed()
	}
	c := dialWS(t, h)
	if ack := c.connect(d, false, now); ack.ReturnCode != 0 {
		t.Fatalf("a valid CONNECT over WebSocket: CONNACK %d", ack.ReturnCode)
	}
	c.ping()
}
