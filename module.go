package herd

// Module is a module identity of a device (GET/PUT /devices/{id}/modules/{mid}):
// a device's IoT Edge module or any other part of it that connects with
// its own identity and has its own twin. It has a device's shape without
// status, capabilities and scopes, plus ModuleID and ManagedBy.
type Module struct {
	ModuleID                   string          `json:"moduleId"`
	DeviceID                   string          `json:"deviceId"`
	ManagedBy                  string          `json:"managedBy,omitempty"`
	GenerationID               string          `json:"generationId"`
	ETag                       string          `json:"etag"`
	ConnectionState            ConnectionState `json:"connectionState"`
	ConnectionStateUpdatedTime Time            `json:"connectionStateUpdatedTime"`
	LastActivityTime           Time            `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount"`
	Authentication             Authentication  `json:"authentication"`
}

// ModuleIdentity is the identity a module connects as, "{deviceId}/{moduleId}"
// (its MQTT client id): device ids cannot contain '/', so the two parts
// are never ambiguous.
func ModuleIdentity(deviceID, moduleID string) string { return deviceID + "/" + moduleID }

// SplitIdentity splits a connection identity into its device and module
// ids; moduleID is "" for a device.
func SplitIdentity(id string) (deviceID, moduleID string) {
	for i := 0; i < len(id); i++ {
		if id[i] == '/' {
			return id[:i], id[i+1:]
		}
	}
	return id, ""
}
