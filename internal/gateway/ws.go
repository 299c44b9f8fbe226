package gateway

import (
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
			// inside MQTT; there is no cookie to protect.
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
		s.serveConn(websocket.NetConn(r.Context(), ws, websocket.MessageBinary), true)
	})
}
