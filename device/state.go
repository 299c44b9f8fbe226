package device

import (
	"errors"
	"strconv"
)

// ErrTokenRenewal is the cause a ConnectionStateHandler is given when the
// client disconnects to renew its SAS token (it reconnects at once).
var ErrTokenRenewal = errors.New("device: reconnecting to renew the SAS token")

// ConnectionState is the state of a client's connection to the hub, as a
// ConnectionStateHandler is told it. (herd.ConnectionState is the hub's
// view of a device, in its twin and registry entry.)
type ConnectionState int

// Connection states.
const (
	// Disconnected: no connection. The error says why: the cause of a
	// drop, ErrTokenRenewal before a token renewal, or ErrClosed after
	// Close, which is always the last report.
	Disconnected ConnectionState = iota
	// Reconnecting: the client is dialling again, with back-off. The
	// error is nil when it starts, and each failed attempt is reported
	// again with its error (a refused token is ErrUnauthorized).
	Reconnecting
	// Connected: a connection is up and subscribed (the error is nil).
	Connected
)

// String returns "Disconnected", "Reconnecting" or "Connected".
func (s ConnectionState) String() string {
	switch s {
	case Disconnected:
		return "Disconnected"
	case Reconnecting:
		return "Reconnecting"
	case Connected:
		return "Connected"
	}
	return "ConnectionState(" + strconv.Itoa(int(s)) + ")"
}

// ConnectionStateHandler is told the client's state as it changes.
type ConnectionStateHandler func(state ConnectionState, err error)

// maxReports bounds the reports waiting for a slow state handler; beyond
// it the oldest are dropped (the newest says where the client is).
const maxReports = 64

type stateReport struct {
	state ConnectionState
	err   error
}

// OnConnectionState registers a handler that is told every change of the
// connection's state: Connected when Connect (or a reconnect) succeeds;
// Disconnected with the cause when the connection drops or is renewed,
// followed by Reconnecting, one more Reconnecting per failed attempt and
// Connected; finally, if Connect succeeded, Disconnected with ErrClosed
// from Close. A failed Connect is reported only by its error.
//
// Handlers run on one goroutine of the client, in registration order,
// one report at a time; a slow handler delays later reports, never the
// connection. Register them before Connect to see every change.
func (c *Client) OnConnectionState(h ConnectionStateHandler) {
	c.mu.Lock()
	c.onState = append(c.onState, h)
	c.mu.Unlock()
}

// setState queues a report for the state handlers; c.mu is held. Nothing
// is reported after Close but its own report.
func (c *Client) setState(s ConnectionState, err error) {
	if c.closed {
		return
	}
	c.queueState(s, err)
}

func (c *Client) queueState(s ConnectionState, err error) {
	if len(c.onState) == 0 {
		return
	}
	if len(c.reports) == maxReports {
		c.reports = c.reports[1:]
	}
	c.reports = append(c.reports, stateReport{s, err})
	select {
	case c.reported <- struct{}{}:
	default:
	}
}

// deliverStates runs the state handlers until it has delivered Close's
// report.
func (c *Client) deliverStates() {
	for {
		c.mu.Lock()
		batch, last := c.reports, c.closed
		hs := append([]ConnectionStateHandler(nil), c.onState...)
		c.reports = nil
		c.mu.Unlock()
		for _, r := range batch {
			for _, h := range hs {
				h(r.state, r.err)
			}
		}
		if last {
			return // Close queued its report before it set closed
		}
		<-c.reported
	}
}
