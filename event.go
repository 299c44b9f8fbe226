package herd

// Event is a device-to-cloud (telemetry) message as the hub received it:
// what GET /events streams and `herd monitor` prints.
type Event struct {
	DeviceID string `json:"deviceId"`
	// ModuleID is the module that sent the message ("" for the device).
	ModuleID     string `json:"moduleId,omitempty"`
	EnqueuedTime Time   `json:"enqueuedTime"`
	// SystemProperties are the message's system properties by their
	// property-bag keys ("$.mid", "$.ct", …; "$.cdid" is set by the hub).
	SystemProperties map[string]string `json:"systemProperties"`
	// Properties are the application properties.
	Properties map[string]string `json:"properties"`
	// Body is the message body (base64 in JSON).
	Body []byte `json:"body"`
}
