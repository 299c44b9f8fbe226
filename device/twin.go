package device

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Twin is the device's view of its twin.
type Twin struct {
	Desired         map[string]any
	Reported        map[string]any
	DesiredVersion  int64
	ReportedVersion int64
}

// Twin reads the device's twin (desired and reported properties). A
// refusal from the hub is a *herd.Error with the response's status.
func (c *Client) Twin(ctx context.Context) (*Twin, error) {
	r, err := c.twinRequest(ctx, "$iothub/twin/GET/?$rid=", nil)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("device: decode twin: %w", err)
	}
	t := &Twin{Desired: raw.Desired, Reported: raw.Reported}
	if t.Desired == nil {
		t.Desired = map[string]any{}
	}
	if t.Reported == nil {
		t.Reported = map[string]any{}
	}
	t.DesiredVersion, _ = versionOf(t.Desired["$version"])
	t.ReportedVersion, _ = versionOf(t.Reported["$version"])
	delete(t.Desired, "$version")
	delete(t.Reported, "$version")
	return t, nil
}

// ReportProperties merges patch into the reported properties (a nil value
// deletes a key) and returns the new reported $version. A refusal from
// the hub is a *herd.Error with the response's status: ArgumentInvalid
// (400) for a key or value the twin rules forbid, for example.
func (c *Client) ReportProperties(ctx context.Context, patch map[string]any) (int64, error) {
	body, err := json.Marshal(patch)
	if err != nil {
		return 0, fmt.Errorf("device: encode reported properties: %w", err)
	}
	r, err := c.twinRequest(ctx, "$iothub/twin/PATCH/properties/reported/?$rid=", body)
	if err != nil {
		return 0, err
	}
	return r.version, nil
}

// twinRequest publishes a twin request and waits for its response.
func (c *Client) twinRequest(ctx context.Context, prefix string, body []byte) (twinReply, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.current(ctx); err != nil {
		return twinReply{}, err
	}
	if err := c.ensureSubscribed(ctx); err != nil {
		return twinReply{}, err
	}
	ch := make(chan twinReply, 1)
	c.mu.Lock()
	c.rid++
	rid := strconv.FormatUint(c.rid, 10)
	c.pending[rid] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, rid)
		c.mu.Unlock()
	}()
	if body == nil {
		body = []byte{}
	}
	if err := c.publish(ctx, prefix+rid, 0, body); err != nil {
		return twinReply{}, err
	}
	select {
	case r := <-ch:
		if r.status >= 300 {
			return twinReply{}, twinError(r.status, r.body)
		}
		return r, nil
	case <-ctx.Done():
		return twinReply{}, fmt.Errorf("device: twin request: %w", ctx.Err())
	case <-c.life.Done():
		return twinReply{}, ErrClosed
	}
}

func (c *Client) twinResponse(topic string, payload []byte) {
	rest := strings.TrimPrefix(topic, "$iothub/twin/res/")
	status, _ := strconv.Atoi(rest[:max(strings.IndexAny(rest, "/?"), 0)])
	q := query(topic)
	version, _ := strconv.ParseInt(q.Get("$version"), 10, 64)
	c.mu.Lock()
	ch := c.pending[q.Get("$rid")]
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- twinReply{status: status, version: version, body: append([]byte(nil), payload...)}:
		default:
		}
	}
}
