package sas

import (
	"fmt"
	"strings"
)

// ConnectionString is a parsed IoT Hub connection string: the semicolon
// separated Key=Value pairs of a service (HostName, SharedAccessKeyName,
// SharedAccessKey) or device (HostName, DeviceId, SharedAccessKey,
// SharedAccessSignature or x509=true, optional GatewayHostName) connection
// string.
type ConnectionString struct {
	HostName              string
	GatewayHostName       string
	DeviceID              string
	ModuleID              string
	SharedAccessKeyName   string
	SharedAccessKey       string
	SharedAccessSignature string
	// X509 is x509=true: the device authenticates with a client
	// certificate given to the device SDK, not with a key or token.
	X509 bool
}

// ParseConnectionString splits s into its fields. It checks only that the
// pairs are well formed and HostName is present; ForService and ForDevice
// check the rest.
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return cs, fmt.Errorf("connection string part %q is not Key=Value", part)
		}
		switch k {
		case "HostName":
			cs.HostName = v
		case "GatewayHostName":
			cs.GatewayHostName = v
		case "DeviceId":
			cs.DeviceID = v
		case "ModuleId":
			cs.ModuleID = v
		case "SharedAccessKeyName":
			cs.SharedAccessKeyName = v
		case "SharedAccessKey":
			cs.SharedAccessKey = v
		case "SharedAccessSignature":
			cs.SharedAccessSignature = v
		case "x509":
			cs.X509 = strings.EqualFold(v, "true")
		}
	}
	if cs.HostName == "" {
		return cs, fmt.Errorf("connection string has no HostName")
	}
	return cs, nil
}

// ForService checks that cs names a shared access policy and its key.
func (cs ConnectionString) ForService() error {
	if cs.SharedAccessKeyName == "" || cs.SharedAccessKey == "" {
		return fmt.Errorf("service connection string needs SharedAccessKeyName and SharedAccessKey")
	}
	return nil
}

// ForDevice checks that cs names a device and a key, a token or x509=true.
func (cs ConnectionString) ForDevice() error {
	if cs.DeviceID == "" {
		return fmt.Errorf("device connection string has no DeviceId")
	}
	if cs.SharedAccessKey == "" && cs.SharedAccessSignature == "" && !cs.X509 {
		return fmt.Errorf("device connection string needs SharedAccessKey, SharedAccessSignature or x509=true")
	}
	return nil
}

// String formats cs in the canonical field order, leaving out empty fields.
func (cs ConnectionString) String() string {
	var parts []string
	x509 := ""
	if cs.X509 {
		x509 = "true"
	}
	for _, f := range [...]struct{ k, v string }{
		{"HostName", cs.HostName}, {"GatewayHostName", cs.GatewayHostName},
		{"DeviceId", cs.DeviceID}, {"ModuleId", cs.ModuleID},
		{"SharedAccessKeyName", cs.SharedAccessKeyName}, {"SharedAccessKey", cs.SharedAccessKey},
		{"SharedAccessSignature", cs.SharedAccessSignature}, {"x509", x509},
	} {
		if f.v != "" {
			parts = append(parts, f.k+"="+f.v)
		}
	}
	return strings.Join(parts, ";")
}
