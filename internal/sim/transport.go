package sim

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// Dialer opens one device's connection to the hub. A fleet calls it once
// per connection attempt; ctx bounds the attempt (dial and handshakes),
// not the connection's life.
type Dialer func(ctx context.Context) (net.Conn, error)

// TCP dials MQTT at addr ("host:port"): plain when tlsConfig is nil, TLS
// otherwise (§1.1: port 8883 on a hub).
func TCP(addr string, tlsConfig *tls.Config) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		if tlsConfig == nil {
			return nc, nil
		}
		tc := tls.Client(nc, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		return tc, nil
	}
}

// WebSocket dials MQTT over secure WebSocket at url
// ("wss://host[:port]/$iothub/websocket", §1.1) with the "mqtt"
// subprotocol; the WebSocket's binary messages carry the MQTT bytes.
func WebSocket(url string, tlsConfig *tls.Config) Dialer {
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 30 * time.Second,
		// Each device holds its own connection; none is reused.
		DisableKeepAlives: true,
	}}
	return func(ctx context.Context) (net.Conn, error) {
		ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client, Subprotocols: []string{"mqtt"}})
		if err != nil {
			if resp != nil {
				return nil, fmt.Errorf("WebSocket %s: %s: %w", url, resp.Status, err)
			}
			return nil, err
		}
		// The connection lives past the dial's ctx; it ends when closed.
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
	}
}

// Pipe is the in-memory transport: each connection is a net.Pipe whose
// other end is handed to serve in a new goroutine — a hub's
// gateway.Server.ServeConn in the same process. No socket or file
// descriptor is used, so a benchmark can connect more devices than the
// process's open-file limit (~19k sockets here) allows; the MQTT bytes,
// the gateway and everything behind it are the same as over TCP.
func Pipe(serve func(net.Conn)) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		device, hub := net.Pipe()
		go serve(hub)
		return device, nil
	}
}
