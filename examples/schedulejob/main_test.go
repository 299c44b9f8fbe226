package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	env := map[string]string{
		"IOTHUB_CONNECTION_STRING": "HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5",
		"IOTHUB_DEVICE_ID":         "fromEnv",
		"HERD_CA":                  "ca.pem",
		"HERD_URL":                 "https://localhost:8443",
	}
	getenv := func(k string) string { return env[k] }

	c, err := parseFlags([]string{"--device-id", "fromFlag", "--method-job-id", "m1", "--max-execution-time", "90s"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.deviceID != "fromFlag" || c.connectionString != env["IOTHUB_CONNECTION_STRING"] || c.ca != "ca.pem" ||
		c.url != "https://localhost:8443" || c.methodJobID != "m1" || !strings.HasPrefix(c.twinJobID, "desired-") || len(c.twinJobID) != 34 || c.maxExecution != 90*time.Second {
		t.Fatalf("config %+v", c)
	}
	if c, err = parseFlags(nil, getenv, io.Discard); err != nil || c.deviceID != "fromEnv" || c.maxExecution != 5*time.Minute {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	if d, _ := parseFlags(nil, getenv, io.Discard); d.methodJobID == c.methodJobID {
		t.Fatalf("job ids repeat across runs: %s", d.methodJobID)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--method-job-id", "j", "--twin-job-id", "j"}, `both "j"`},
		{[]string{"--max-execution-time", "10ms"}, "--max-execution-time 10ms: must be at least 1s"},
		{[]string{"--max-execution-time", "soon"}, `invalid value "soon"`},
	} {
		if _, err := parseFlags(tc.args, getenv, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"myDeviceId": `'myDeviceId'`,
		"it's":       `'it\'s'`,
		`a\b`:        `'a\\b'`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}
