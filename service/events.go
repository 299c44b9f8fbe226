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
	q := url.Values{"api-version": {herd.APIVersion}}
	if deviceID != "" {
		q.Set("deviceId", deviceID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint+"/events?"+q.Encode(), nil)
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
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer c.release()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		return parseError(resp, data)
	}
	err = readEvents(resp.Body, h)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// readEvents parses a Server-Sent Events stream: "event:" and "data:"
// lines, a blank line ends an event, lines starting with ':' are comments.
func readEvents(r io.Reader, h EventHandler) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 2<<20)
	var kind string
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 {
				if err := dispatch(kind, data.String(), h); err != nil {
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
	return errors.New("the hub closed the event stream")
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
