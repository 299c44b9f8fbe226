package service

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sas"
)

// EventHandler receives the stream of MonitorEvents. Dropped, if not nil,
// is told how many messages the hub dropped because this monitor fell
// behind.
type EventHandler struct {
	Event   func(*herd.Event) error
	Dropped func(n int64)
}

// MonitorEvents streams device-to-cloud messages as the hub receives them
// (GET /events, Server-Sent Events), for one device or for all when
// deviceID is "". It returns nil when ctx ends, the handler's error if it
// fails, or an error when the stream breaks.
func (c *Client) MonitorEvents(ctx context.Context, deviceID string, h EventHandler) error {
	q := url.Values{}
	if deviceID != "" {
		q.Set("deviceId", deviceID)
	}
	err := c.stream(ctx, "/events", q, func(kind, data string) error { return dispatch(kind, data, h) })
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// stream opens a Server-Sent Events stream of the hub (GET path) and
// hands each event to fn until the stream ends, fn fails or ctx ends. An
// error reply is returned as a *herd.Error; a stream the hub closes is
// errStreamClosed.
func (c *Client) stream(ctx context.Context, path string, q url.Values, fn func(kind, data string) error) error {
	q.Set("api-version", herd.APIVersion)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	tok, err := sas.ServiceToken(c.cs.HostName, c.cs.SharedAccessKeyName, c.cs.SharedAccessKey, c.now().Add(time.Hour))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer c.release()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		return parseError(resp, data)
	}
	return readEvents(resp.Body, fn)
}

// errStreamClosed: the hub ended an event stream (it shut down, or the
// connection broke).
var errStreamClosed = errors.New("the hub closed the event stream")

// errStreamDone ends readEvents from a handler that has what it wanted.
var errStreamDone = errors.New("event stream done")

// readEvents parses a Server-Sent Events stream: "event:" and "data:"
// lines, a blank line ends an event, lines starting with ':' are comments.
func readEvents(r io.Reader, fn func(kind, data string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 2<<20)
	var kind string
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 {
				if err := fn(kind, data.String()); err != nil {
					return err
				}
			}
			kind = ""
			data.Reset()
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event:"):
			kind = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read event stream: %w", err)
	}
	return errStreamClosed
}

func dispatch(kind, data string, h EventHandler) error {
	switch kind {
	case "dropped":
		if n, err := strconv.ParseInt(data, 10, 64); err == nil && h.Dropped != nil {
			h.Dropped(n)
		}
		return nil
	case "", "message":
		var e herd.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		if h.Event != nil {
			return h.Event(&e)
		}
	}
	return nil
}
