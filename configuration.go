package herd

import "encoding/json"

// Configuration is an automatic device configuration (PUT
// /configurations/{id}): desired properties that the hub applies to every
// device its TargetCondition selects, now and whenever a device starts
// matching later (created or retagged). Of the configurations that select
// one device, the one with the highest Priority applies (on a tie, the one
// created last). It is the Azure-compatible face of a continuous twin
// update (docs/configurations.md).
type Configuration struct {
	ID            string `json:"id"`
	SchemaVersion string `json:"schemaVersion"`
	// Labels are free key-value pairs describing the configuration.
	Labels  map[string]string    `json:"labels,omitempty"`
	Content ConfigurationContent `json:"content"`
	// TargetCondition selects the devices: the WHERE part of a twin query
	// over tags and deviceId ("" selects none).
	TargetCondition    string `json:"targetCondition"`
	CreatedTimeUTC     Time   `json:"createdTimeUtc"`
	LastUpdatedTimeUTC Time   `json:"lastUpdatedTimeUtc"`
	Priority           int    `json:"priority"`
	// SystemMetrics are targetedCount (devices the condition selects) and
	// appliedCount (those the configuration applies to: no configuration
	// of higher priority selects them).
	SystemMetrics ConfigurationMetrics `json:"systemMetrics"`
	// Metrics are the caller's queries (SELECT deviceId FROM devices
	// WHERE …) and how many devices each selects.
	Metrics ConfigurationMetrics `json:"metrics"`
	ETag    string               `json:"etag"`
}

// ConfigurationContent is what a configuration applies. DeviceContent
// maps "properties.desired.<name>" to the value that desired property
// takes (a name may be a path: properties.desired.a.b). Module content is
// refused: Herd has no modules yet.
type ConfigurationContent struct {
	DeviceContent  map[string]json.RawMessage `json:"deviceContent,omitempty"`
	ModulesContent map[string]json.RawMessage `json:"modulesContent,omitempty"`
	ModuleContent  map[string]json.RawMessage `json:"moduleContent,omitempty"`
}

// ConfigurationMetrics are named queries and their results (device
// counts).
type ConfigurationMetrics struct {
	Results map[string]int64  `json:"results"`
	Queries map[string]string `json:"queries"`
}
