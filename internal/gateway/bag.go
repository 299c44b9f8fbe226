package gateway

import (
	"fmt"
	"net/url"
	"strings"
)

// systemKeys are the property-bag keys that are message system properties
// (§8.10); every other key is an application property.
var systemKeys = map[string]bool{
	"$.mid": true, "$.cid": true, "$.uid": true, "$.to": true, "$.ct": true, "$.ce": true,
	"$.exp": true, "$.ctime": true, "$.on": true, "$.ifid": true, "$.sub": true,
	"$.schema": true, "$.cdid": true, "$.cmid": true, "$.diagid": true, "$.diagctx": true,
}

// Bag is a decoded telemetry property bag.
type Bag struct {
	System      map[string]string
	Application map[string]string
}

// ParseBag decodes a URL-encoded property bag "k=v&k2=v2" (§8.10): keys
// and values are percent-decoded before system keys ("%24.mid" → "$.mid")
// are recognised; "k" alone is a property with an empty value; empty pairs
// are skipped.
func ParseBag(s string) (Bag, error) {
	var b Bag
	if s == "" {
		return b, nil
	}
	for _, pair := range strings.Split(s, "&") {
		if pair == "" {
			continue
		}
		rk, rv, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(rk)
		if err != nil {
			return Bag{}, fmt.Errorf("property bag key %q: %v", rk, err)
		}
		v, err := url.QueryUnescape(rv)
		if err != nil {
			return Bag{}, fmt.Errorf("property bag value of %q: %v", k, err)
		}
		if k == "" {
			return Bag{}, fmt.Errorf("property bag has an empty key")
		}
		if systemKeys[k] {
			if b.System == nil {
				b.System = map[string]string{}
			}
			b.System[k] = v
			continue
		}
		if b.Application == nil {
			b.Application = map[string]string{}
		}
		b.Application[k] = v
	}
	return b, nil
}
