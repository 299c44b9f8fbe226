package gateway

import (
	"crypto/x509"
	"net"
	"net/http"

	"github.com/coder/websocket"
)

// WebSocketPath is where MQTT over WebSocket is served on the HTTPS
// listener (§1.1).
const WebSocketPath = "/$iothub/websocket"

// WebSocketHandler serves MQTT over WebSocket (subprotocol "mqtt"): the
// WebSocket library upgrades the request and its binary messages are
// wrapped as a net.Conn for the same MQTT code path as TCP and TLS.
func (s *Server) WebSocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols: []string{"mqtt"},
			// Devices are not browsers and authenticate with SAS tokens
			// inside MQTT or client certificates; there is no cookie to
			// protect.
			InsecureSkipVerify: true,
		})
		if err != nil {
			return // Accept has answered the request
		}
		if ws.Subprotocol() != "mqtt" {
			ws.Close(websocket.StatusPolicyViolation, `the WebSocket subprotocol must be "mqtt"`)
			return
		}
		ws.SetReadLimit(MaxPacket + 1024)
		nc := websocket.NetConn(r.Context(), ws, websocket.MessageBinary)
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			// The client certificate of the HTTPS handshake authenticates
			// X.509 devices, as on 8883.
			nc = certConn{Conn: nc, chain: r.TLS.PeerCertificates}
		}
		s.serveConn(nc, true)
	})
}

// certConn is a WebSocket connection with the client certificate chain of
// the TLS handshake it came through.
type certConn struct {
	net.Conn
	chain []*x509.Certificate
}

// PeerCertificates returns the chain, leaf first.
func (c certConn) PeerCertificates() []*x509.Certificate { return c.chain }
