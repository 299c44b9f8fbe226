package device

import (
	"context"
	"net/url"
	"sort"
	"strings"
)

// SendEvent sends a telemetry message with QoS 1 and waits for the hub's
// acknowledgement. props are the message's properties: keys starting with
// "$." are system properties ("$.ct" content type, "$.ce" content
// encoding, "$.mid" message id, …), the rest application properties.
func (c *Client) SendEvent(ctx context.Context, body []byte, props map[string]string) error {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	root := "devices/" + c.cs.DeviceID
	if c.cs.ModuleID != "" {
		root += "/modules/" + c.cs.ModuleID
	}
	return c.publish(ctx, root+"/messages/events/"+encodeBag(props), 1, body)
}

// encodeBag writes a property bag as the SDKs do (§8.10): system
// properties first, keys and values percent-encoded.
func encodeBag(props map[string]string) string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		si, sj := strings.HasPrefix(keys[i], "$."), strings.HasPrefix(keys[j], "$.")
		if si != sj {
			return si
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(escape(k))
		b.WriteByte('=')
		b.WriteString(escape(props[k]))
	}
	return b.String()
}

// escape is encodeURIComponent: spaces as %20, '/' and '&' encoded.
func escape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
