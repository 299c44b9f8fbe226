package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herd-iot/herd"
)

// Direct methods between nodes travel in batches: a node sends the calls
// for the devices of another node as one request to that node's calls
// subject, which takes them at once (its reply says whether it did) and
// answers each as its device does, in batches too, to the caller's answers
// subject. A batch is what has queued while the previous one to that node
// was being taken, so batches grow with the load and a lone call goes at
// once. NATS's "no responders" to a batch says the node is gone.

func callsSubject(node string) string   { return "herd.node." + node + ".calls" }
func answersSubject(node string) string { return "herd.node." + node + ".answers" }

// Bounds of the batches and of how long a node may take to take one.
const (
	maxCallBatch   = 1000
	maxAnswerBatch = 1000
	takeTimeout    = 5 * time.Second
)

// callBatch is the calls one node sends another.
type callBatch struct {
	From  string       `json:"from"`
	Calls []methodCall `json:"calls"`
}

// methodCall is a direct method for a device on the node it is sent to.
type methodCall struct {
	ID       uint64             `json:"id"`
	DeviceID string             `json:"deviceId"`
	Request  herd.MethodRequest `json:"request"`
}

// taken is a node's reply to a batch: taken, or refused with a code that
// every call of the batch fails with.
type taken struct {
	Code    herd.ErrorCode `json:"code,omitempty"`
	Message string         `json:"message,omitempty"`
}

// answerBatch is answers one node sends the node that made the calls.
type answerBatch struct {
	Answers []methodAnswer `json:"answers"`
}

// methodAnswer is the answer to one call: the device's result, or the
// failure.
type methodAnswer struct {
	ID      uint64             `json:"id"`
	Result  *herd.MethodResult `json:"result,omitempty"`
	Code    herd.ErrorCode     `json:"code,omitempty"`
	Message string             `json:"message,omitempty"`
}

// callState is a node's calls in both directions.
type callState struct {
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]*pendingCall      // calls made here, by id
	queues  map[string]chan *pendingCall // to send, by node
	answers map[string]chan methodAnswer // to send, by the node that called
}

// pendingCall is a call made here, waiting for its answer.
type pendingCall struct {
	call methodCall
	done chan methodAnswer // buffered 1: the one answer or refusal
}

// Invoke calls a method on a device connected to node (the method
// service's Remote).
func (m *Mesh) Invoke(ctx context.Context, node, deviceID string, req herd.MethodRequest) (*herd.MethodResult, error) {
	req.ConnectTimeoutInSeconds = 0
	cs := &m.calls
	cs.mu.Lock()
	if cs.waiting == nil {
		cs.waiting, cs.queues = map[uint64]*pendingCall{}, map[string]chan *pendingCall{}
	}
	cs.next++
	pc := &pendingCall{call: methodCall{ID: cs.next, DeviceID: deviceID, Request: req}, done: make(chan methodAnswer, 1)}
	cs.waiting[pc.call.ID] = pc
	q := cs.queues[node]
	if q == nil {
		q = make(chan *pendingCall, 4*maxCallBatch)
		cs.queues[node] = q
		m.senders.Add(1)
		go m.sendCalls(node, q)
	}
	cs.mu.Unlock()
	defer func() {
		cs.mu.Lock()
		delete(cs.waiting, pc.call.ID)
		cs.mu.Unlock()
	}()
	wait := time.Duration(req.ResponseTimeoutInSeconds)*time.Second + answerMargin
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case q <- pc:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-m.stop:
		return nil, herd.Errorf(herd.ErrDeviceNotOnline, "this node is shutting down")
	}
	var a methodAnswer
	select {
	case a = <-pc.done:
	case <-timer.C:
		return nil, herd.Errorf(herd.ErrGatewayTimeout, "node %s, which holds the device, did not answer within %s", node, wait)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-m.stop:
		return nil, herd.Errorf(herd.ErrGatewayTimeout, "this node shut down before node %s answered", node)
	}
	if a.Code != "" {
		if a.Code == herd.ErrDeviceNotOnline {
			m.dropOwner(deviceID, node) // gone from there
		}
		return nil, herd.Errorf(a.Code, "%s", a.Message)
	}
	if a.Result == nil {
		return nil, errors.New("node " + node + " answered neither a result nor an error")
	}
	return a.Result, nil
}

// sendCalls sends the calls queued for node in batches, one batch at a
// time, until the mesh closes.
func (m *Mesh) sendCalls(node string, q chan *pendingCall) {
	defer m.senders.Done()
	batch := make([]*pendingCall, 0, maxCallBatch)
	for {
		select {
		case pc := <-q:
			batch = append(batch[:0], pc)
		case <-m.stop:
			return
		}
	more:
		for len(batch) < maxCallBatch {
			select {
			case pc := <-q:
				batch = append(batch, pc)
			default:
				break more
			}
		}
		m.sendBatch(node, batch)
	}
}

// sendBatch sends one batch and fails its calls if node does not take it.
func (m *Mesh) sendBatch(node string, batch []*pendingCall) {
	b := callBatch{From: m.cfg.NodeID, Calls: make([]methodCall, len(batch))}
	for i, pc := range batch {
		b.Calls[i] = pc.call
	}
	fail := func(code herd.ErrorCode, msg string) {
		for _, pc := range batch {
			pc.done <- methodAnswer{ID: pc.call.ID, Code: code, Message: msg}
		}
	}
	body, err := json.Marshal(b)
	if err != nil {
		fail(herd.ErrArgumentInvalid, "the calls do not encode: "+err.Error())
		return
	}
	msg, err := m.nc.Request(callsSubject(node), body, takeTimeout)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		// The node is gone: the calls reached no one.
		fail(herd.ErrDeviceNotOnline, "node "+node+", which held the device, is gone")
		return
	case err != nil:
		fail(herd.ErrGatewayTimeout, "node "+node+", which holds the device, did not take the call within "+takeTimeout.String()+": "+err.Error())
		return
	}
	var t taken
	if err := json.Unmarshal(msg.Data, &t); err != nil {
		fail(herd.ErrGatewayTimeout, "the reply of node "+node+" to the calls does not parse: "+err.Error())
		return
	}
	if t.Code != "" {
		fail(t.Code, t.Message)
	}
}

// takeAnswers delivers a batch of answers to the calls waiting here.
func (m *Mesh) takeAnswers(msg *nats.Msg) {
	var b answerBatch
	if err := json.Unmarshal(msg.Data, &b); err != nil {
		m.cfg.Log.Warn("cluster: method answers that do not parse", "err", err)
		return
	}
	cs := &m.calls
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, a := range b.Answers {
		if pc := cs.waiting[a.ID]; pc != nil {
			select {
			case pc.done <- a:
			default: // answered already (refused): cannot happen twice
			}
		}
	}
}

// takeCalls takes a batch of calls from another node: it refuses them
// while the node drains, else replies that it took them and runs each,
// queueing its answer for the caller.
func (m *Mesh) takeCalls(msg *nats.Msg, invoke func(context.Context, string, herd.MethodRequest) (*herd.MethodResult, error)) {
	var b callBatch
	if err := json.Unmarshal(msg.Data, &b); err != nil || b.From == "" {
		m.reply(msg, taken{Code: herd.ErrArgumentInvalid, Message: "method calls that do not parse"})
		return
	}
	m.answerMu.Lock()
	if m.draining {
		m.answerMu.Unlock()
		m.reply(msg, taken{Code: herd.ErrDeviceNotOnline,
			Message: "node " + m.cfg.NodeID + " is shutting down: the device is about to reconnect to another node"})
		return
	}
	m.answering.Add(len(b.Calls))
	m.answerMu.Unlock()
	m.reply(msg, taken{})
	out := m.answerQueue(b.From)
	for _, c := range b.Calls {
		go func() {
			defer m.answering.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(c.Request.ResponseTimeoutInSeconds)*time.Second+answerMargin)
			res, err := invoke(ctx, c.DeviceID, c.Request)
			cancel()
			a := methodAnswer{ID: c.ID, Result: res}
			if err != nil {
				a.Result, a.Code, a.Message = nil, herd.ErrorCodeOf(err), herd.ErrorMessage(err)
			}
			select {
			case out <- a:
			case <-m.stop: // closed without a drain: the caller times out
			}
		}()
	}
}

// answerQueue returns the queue of answers to node, starting its sender.
func (m *Mesh) answerQueue(node string) chan methodAnswer {
	cs := &m.calls
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.answers == nil {
		cs.answers = map[string]chan methodAnswer{}
	}
	q := cs.answers[node]
	if q == nil {
		q = make(chan methodAnswer, 4*maxAnswerBatch)
		cs.answers[node] = q
		m.senders.Add(1)
		go m.sendAnswers(node, q)
	}
	return q
}

// sendAnswers sends the answers queued for node in batches of what has
// arrived, until the mesh closes (what is queued then is sent).
func (m *Mesh) sendAnswers(node string, q chan methodAnswer) {
	defer m.senders.Done()
	batch := make([]methodAnswer, 0, maxAnswerBatch)
	for {
		stopping := false
		select {
		case a := <-q:
			batch = append(batch[:0], a)
		case <-m.stop:
			batch, stopping = batch[:0], true
		}
	more:
		for len(batch) < maxAnswerBatch {
			select {
			case a := <-q:
				batch = append(batch, a)
			default:
				break more
			}
		}
		if len(batch) > 0 {
			body, err := json.Marshal(answerBatch{Answers: batch})
			if err == nil {
				err = m.nc.Publish(answersSubject(node), body)
			}
			if err != nil {
				m.cfg.Log.Warn("cluster: could not send method answers", "node", node, "answers", len(batch), "err", err)
			}
		}
		if stopping && len(batch) < maxAnswerBatch {
			return
		}
	}
}

// reply answers a batch of calls with whether it was taken.
func (m *Mesh) reply(msg *nats.Msg, t taken) {
	body, err := json.Marshal(t)
	if err == nil {
		err = msg.Respond(body)
	}
	if err != nil {
		m.cfg.Log.Warn("cluster: could not reply to method calls", "err", err)
	}
}
