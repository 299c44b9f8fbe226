package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	env := map[string]string{
		"IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h;DeviceId=d;SharedAccessKey=a2V5",
		"HERD_CA":                         "ca.pem",
		"HERD_DEVICE_ADDRESS":             "localhost:18883",
	}
	getenv := func(k string) string { return env[k] }
	c, err := parseFlags(nil, getenv, io.Discard)
	if err != nil || c.connectionString != env["IOTHUB_DEVICE_CONNECTION_STRING"] || c.ca != "ca.pem" || c.address != "localhost:18883" {
		t.Fatalf("from the environment: %+v %v", c, err)
	}
	c, err = parseFlags([]string{"--ca", "other.pem", "--address", "127.0.0.1:8883"}, getenv, io.Discard)
	if err != nil || c.ca != "other.pem" || c.address != "127.0.0.1:8883" {
		t.Fatalf("flags win: %+v %v", c, err)
	}
	if _, err := parseFlags([]string{"x"}, getenv, io.Discard); err == nil || !strings.Contains(err.Error(), `unexpected argument "x"`) {
		t.Fatalf("argument: %v", err)
	}
}

func TestRunRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "no device connection string"},
		{map[string]string{"IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"}, "has no DeviceId"},
		{map[string]string{"IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h;DeviceId=d;SharedAccessKey=a2V5", "HERD_CA": "/nonexistent/ca.pem"}, "read CA"},
	} {
		getenv := func(k string) string { return tc.env[k] }
		err := run(context.Background(), nil, getenv, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		}
	}
}

func TestCompact(t *testing.T) {
	for in, want := range map[string]string{
		"{ \"lockTime\" : \"10m\" }": `{"lockTime":"10m"}`,
		"":                           "null",
		"not json":                   "not json",
	} {
		if got := string(compact([]byte(in))); got != want {
			t.Errorf("compact(%q) = %s, want %s", in, got, want)
		}
	}
}
