// Package sas signs and parses the shared access signature (SAS) tokens and
// connection strings of Azure IoT Hub, exactly as the official SDKs write
// them (§2 of the compatibility reference).
//
// It is public because the server (internal/auth), the Go service SDK and the
// Go device SDK all need the same token format; it uses only the standard
// library.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every SAS token.
const Prefix = "SharedAccessSignature "

// Token is a parsed SAS token. Resource and Expiry keep the literal text of
// the token, because the signature covers that text byte for byte.
type Token struct {
	// Resource is the literal sr value (percent-encoded for device tokens).
	Resource string
	// Signature is the decoded base64 signature.
	Signature string
	// Expiry is the literal se value: Unix seconds.
	Expiry string
	// KeyName is the decoded skn value: the shared access policy, or "" for
	// a token signed with a device's own key.
	KeyName string
}

// ExpiresAt returns the token's expiry time.
func (t Token) ExpiresAt() (time.Time, error) {
	se, err := strconv.ParseInt(t.Expiry, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("se %q is not a number of seconds", t.Expiry)
	}
	return time.Unix(se, 0), nil
}

// DecodedResource returns the percent-decoded resource URI.
func (t Token) DecodedResource() (string, error) {
	return url.PathUnescape(t.Resource)
}

// Parse parses a token of the form
// "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]" (fields in any order).
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Token{}, errors.New("token does not start with \"SharedAccessSignature \"")
	}
	var t Token
	seen := map[string]bool{}
	for _, pair := range strings.Split(rest, "&") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return Token{}, fmt.Errorf("token field %q has no '='", pair)
		}
		if seen[k] {
			return Token{}, fmt.Errorf("token field %q appears twice", k)
		}
		seen[k] = true
		switch k {
		case "sr":
			t.Resource = v
		case "sig":
			sig, err := url.PathUnescape(v)
			if err != nil {
				return Token{}, fmt.Errorf("token sig: %v", err)
			}
			t.Signature = sig
		case "se":
			t.Expiry = v
		case "skn":
			skn, err := url.PathUnescape(v)
			if err != nil {
				return Token{}, fmt.Errorf("token skn: %v", err)
			}
			t.KeyName = skn
		}
	}
	switch {
	case t.Resource == "":
		return Token{}, errors.New("token has no sr")
	case t.Signature == "":
		return Token{}, errors.New("token has no sig")
	case t.Expiry == "":
		return Token{}, errors.New("token has no se")
	}
	if _, err := t.ExpiresAt(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// Signature computes base64(HMAC-SHA256(base64decode(key), resource+"\n"+expiry))
// over the literal resource and expiry text.
func Signature(key, resource, expiry string) (string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("key is not base64: %w", err)
	}
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(resource + "\n" + expiry))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// Verify reports whether the token is signed with key.
func (t Token) Verify(key string) bool {
	want, err := Signature(key, t.Resource, t.Expiry)
	if err != nil {
		return false
	}
	return hmac.Equal([]byte(want), []byte(t.Signature))
}

// New signs a token for resource (the literal sr text, already encoded as
// the caller wants it) with key, valid until expiry. keyName is the policy
// name, or "" for a device key.
func New(resource, key, keyName string, expiry time.Time) (string, error) {
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig, err := Signature(key, resource, se)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString("sr=" + resource)
	b.WriteString("&sig=" + EncodeStrict(sig))
	if keyName != "" {
		b.WriteString("&skn=" + EncodeStrict(keyName))
	}
	b.WriteString("&se=" + se)
	return b.String(), nil
}

// ServiceToken signs a token for the whole hub with a shared access policy,
// as the service SDKs do (sr is the plain host name).
func ServiceToken(host, policy, key string, expiry time.Time) (string, error) {
	return New(host, key, policy, expiry)
}

// DeviceResource returns the encoded sr for a device: host/devices/{id}.
func DeviceResource(host, deviceID string) string {
	return EncodeStrict(host + "/devices/" + deviceID)
}

// ModuleResource is a module's token resource (sr):
// {host}/devices/{deviceId}/modules/{moduleId}, percent-encoded.
func ModuleResource(host, deviceID, moduleID string) string {
	return EncodeStrict(host + "/devices/" + deviceID + "/modules/" + moduleID)
}

// ModuleToken signs a token for one module with its key (or with a policy
// key when policy is not empty).
func ModuleToken(host, deviceID, moduleID, policy, key string, expiry time.Time) (string, error) {
	return New(ModuleResource(host, deviceID, moduleID), key, policy, expiry)
}

// DeviceToken signs a token for one device with that device's key (or with
// a policy key when policy is not empty), as the device SDKs do.
func DeviceToken(host, deviceID, policy, key string, expiry time.Time) (string, error) {
	return New(DeviceResource(host, deviceID), key, policy, expiry)
}

// EncodeStrict is JavaScript's encodeURIComponent with ! ' ( ) * escaped
// too: everything but ASCII letters, digits and - _ . ~ becomes %XX.
func EncodeStrict(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
