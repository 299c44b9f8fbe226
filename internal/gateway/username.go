package gateway

import (
	"fmt"
	"net/url"
	"strings"
)

// ParseUsername checks the CONNECT user name of device clientID against
// the hub's host name and returns its query parameters (§8.2): the user
// name must begin with "{host}/{clientID}/" — host compared
// case-insensitively, with an optional ":port" — followed by nothing or by
// "?" and a query string (api-version, DeviceClientType, model-id, …;
// unknown keys are kept and ignored by the caller). Device ids may contain
// '?', so the name is never split on its first '?'.
func ParseUsername(username, host, clientID string) (url.Values, error) {
	h, rest, ok := strings.Cut(username, "/")
	if !ok {
		return nil, fmt.Errorf("user name %q is not {host}/{deviceId}/?api-version=…", username)
	}
	if !sameHost(h, host) {
		return nil, fmt.Errorf("user name names host %q, not this hub (%q)", h, host)
	}
	rest, ok = strings.CutPrefix(rest, clientID+"/")
	if !ok {
		return nil, fmt.Errorf("user name %q does not name client id %q", username, clientID)
	}
	if rest == "" {
		return url.Values{}, nil
	}
	q, ok := strings.CutPrefix(rest, "?")
	if !ok {
		return nil, fmt.Errorf("user name %q has text after the client id that is not a query", username)
	}
	v, err := url.ParseQuery(q)
	if err != nil {
		return nil, fmt.Errorf("user name query: %v", err)
	}
	return v, nil
}

func sameHost(h, host string) bool {
	if strings.EqualFold(h, host) {
		return true
	}
	name, port, ok := strings.Cut(h, ":")
	return ok && port != "" && strings.EqualFold(name, host)
}
