package sas

import (
	"testing"
	"time"
)

// The expected token was computed independently with openssl:
// printf 'localhost%%2Fdevices%%2Fdev1\n1795672847' | openssl dgst -sha256 -mac HMAC -macopt key:secretkey-0123456789abcdef -binary | base64
const (
	testKey   = "c2VjcmV0a2V5LTAxMjM0NTY3ODlhYmNkZWY=" // base64("secretkey-0123456789abcdef")
	wantToken = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=aykik6Vqw8h56ije5I%2BUf3h86PGhQz18QkcVt5RQvpU%3D&se=1795672847"
)

func TestDeviceTokenMatchesReference(t *testing.T) {
	got, err := DeviceToken("localhost", "dev1", "", testKey, time.Unix(1795672847, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got != wantToken {
		t.Fatalf("DeviceToken =\n %s\nwant\n %s", got, wantToken)
	}
	tok, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Verify(testKey) {
		t.Error("token does not verify with its own key")
	}
	if tok.Verify("b3RoZXJrZXktMDEyMzQ1Njc4OWFiY2RlZg==") {
		t.Error("token verifies with another key")
	}
	if sr, _ := tok.DecodedResource(); sr != "localhost/devices/dev1" {
		t.Errorf("decoded sr = %q", sr)
	}
}

func TestParseFieldOrderAndErrors(t *testing.T) {
	tok, err := Parse("SharedAccessSignature skn=iothubowner&se=1795672847&sig=abc%2B%3D&sr=localhost")
	if err != nil {
		t.Fatal(err)
	}
	if tok.KeyName != "iothubowner" || tok.Signature != "abc+=" || tok.Resource != "localhost" || tok.Expiry != "1795672847" {
		t.Errorf("parsed %+v", tok)
	}
	for _, bad := range []string{
		"", "Bearer x", "SharedAccessSignature sr=a&sig=b", "SharedAccessSignature sr=a&se=1",
		"SharedAccessSignature sig=b&se=1", "SharedAccessSignature sr=a&sig=b&se=soon",
		"SharedAccessSignature sr=a&sr=b&sig=c&se=1", "SharedAccessSignature sr",
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted a malformed token", bad)
		}
	}
}

func TestEncodeStrict(t *testing.T) {
	if got := EncodeStrict("a/b c!'()*~._-+="); got != "a%2Fb%20c%21%27%28%29%2A~._-%2B%3D" {
		t.Errorf("EncodeStrict = %s", got)
	}
}

func TestConnectionString(t *testing.T) {
	cs, err := ParseConnectionString("HostName=localhost;DeviceId=d1;SharedAccessKey=abc=;GatewayHostName=localhost:18883")
	if err != nil {
		t.Fatal(err)
	}
	if cs.HostName != "localhost" || cs.DeviceID != "d1" || cs.SharedAccessKey != "abc=" || cs.GatewayHostName != "localhost:18883" {
		t.Errorf("parsed %+v", cs)
	}
	if err := cs.ForDevice(); err != nil {
		t.Error(err)
	}
	if err := cs.ForService(); err == nil {
		t.Error("a device connection string passed ForService")
	}
	if got := cs.String(); got != "HostName=localhost;GatewayHostName=localhost:18883;DeviceId=d1;SharedAccessKey=abc=" {
		t.Errorf("String = %s", got)
	}
	for _, bad := range []string{"", "DeviceId=d1;SharedAccessKey=x", "HostName=h;junk"} {
		if _, err := ParseConnectionString(bad); err == nil {
			t.Errorf("ParseConnectionString(%q) accepted it", bad)
		}
	}
}

// A device that authenticates with a certificate has x509=true in its
// connection string instead of a key (§1.7).
func TestConnectionStringX509(t *testing.T) {
	cs, err := ParseConnectionString("HostName=localhost;DeviceId=d1;x509=true")
	if err != nil {
		t.Fatal(err)
	}
	if !cs.X509 || cs.SharedAccessKey != "" {
		t.Errorf("parsed %+v", cs)
	}
	if err := cs.ForDevice(); err != nil {
		t.Errorf("ForDevice: %v", err)
	}
	if got := cs.String(); got != "HostName=localhost;DeviceId=d1;x509=true" {
		t.Errorf("String = %s", got)
	}
	cs, _ = ParseConnectionString("HostName=localhost;DeviceId=d1;x509=false")
	if err := cs.ForDevice(); err == nil {
		t.Error("x509=false with no key passed ForDevice")
	}
}
