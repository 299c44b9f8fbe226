// Package twin owns device twins: the document (tags, desired and reported
// properties), how patches merge into it, its versions, etag and $metadata,
// and the limits Azure IoT Hub enforces on it (§4 of the compatibility
// reference).
//
// The document logic is pure (Doc and its methods) so that every writer —
// the REST API, the device gateway and twin-update jobs — applies the same
// rules; Service adds storage and change notification.
package twin

import (
	"encoding/base64"
	"encoding/binary"
	"time"

	"github.com/herd-iot/herd"
)

// Doc is the mutable part of a twin as the store keeps it. Desired and
// Reported hold only the properties; their "$version" and "$metadata"
// members are kept in the fields beside them and added back by View.
type Doc struct {
	Tags     map[string]any
	Desired  map[string]any
	Reported map[string]any

	// DesiredMeta and ReportedMeta are the $metadata trees: every object
	// node has "$lastUpdated" (and "$lastUpdatedVersion" in desired) and
	// one member per property.
	DesiredMeta  map[string]any
	ReportedMeta map[string]any

	DesiredVersion  int64
	ReportedVersion int64
	// Version is the twin-level version; it rises on every write.
	Version int64
	// ETag is a counter that rises on every write; ETagString encodes it.
	ETag int64
}

// NewDoc returns the twin of a new device: empty sections at version 1.
func NewDoc(now time.Time) *Doc {
	d := &Doc{
		Tags:            map[string]any{},
		Desired:         map[string]any{},
		Reported:        map[string]any{},
		DesiredVersion:  1,
		ReportedVersion: 1,
		Version:         1,
		ETag:            1,
	}
	d.DesiredMeta = map[string]any{metaLastUpdated: stamp(now), metaLastUpdatedVersion: d.DesiredVersion}
	d.ReportedMeta = map[string]any{metaLastUpdated: stamp(now)}
	return d
}

// ETagString is the twin etag on the wire: base64 of the 8-byte big-endian
// counter, as Azure writes it (e.g. "AAAAAAAAAAE=").
func ETagString(n int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return base64.StdEncoding.EncodeToString(b[:])
}

// View assembles the service-side twin document from the identity and doc.
func View(id *herd.Device, d *Doc) *herd.Twin {
	desired := make(map[string]any, len(d.Desired)+2)
	for k, v := range d.Desired {
		desired[k] = v
	}
	desired["$metadata"] = d.DesiredMeta
	desired["$version"] = d.DesiredVersion
	reported := make(map[string]any, len(d.Reported)+2)
	for k, v := range d.Reported {
		reported[k] = v
	}
	reported["$metadata"] = d.ReportedMeta
	reported["$version"] = d.ReportedVersion
	return &herd.Twin{
		DeviceID:                  id.DeviceID,
		ETag:                      ETagString(d.ETag),
		DeviceETag:                id.ETag,
		Status:                    id.Status,
		StatusReason:              id.StatusReason,
		StatusUpdateTime:          id.StatusUpdatedTime,
		ConnectionState:           id.ConnectionState,
		LastActivityTime:          id.LastActivityTime,
		CloudToDeviceMessageCount: id.CloudToDeviceMessageCount,
		AuthenticationType:        id.Authentication.Type,
		X509Thumbprint:            id.Authentication.X509Thumbprint,
		Version:                   d.Version,
		Capabilities:              id.Capabilities,
		Tags:                      d.Tags,
		Properties:                herd.TwinProperties{Desired: desired, Reported: reported},
	}
}

// ModuleView assembles the service-side twin of a module: a device
// twin's shape with moduleId, the module's etag as deviceEtag, and status
// enabled (a module has no status of its own).
func ModuleView(m *herd.Module, d *Doc) *herd.Twin {
	t := View(&herd.Device{DeviceID: m.DeviceID, ETag: m.ETag, Status: herd.DeviceEnabled, ConnectionState: m.ConnectionState,
		LastActivityTime: m.LastActivityTime, CloudToDeviceMessageCount: m.CloudToDeviceMessageCount,
		Authentication: m.Authentication}, d)
	t.ModuleID = m.ModuleID
	return t
}

// DeviceView is the twin as the device sees it on a full GET over MQTT:
// {"desired":{…,"$version":n},"reported":{…,"$version":m}}, without
// $metadata (§8.7).
func DeviceView(d *Doc) map[string]any {
	desired := make(map[string]any, len(d.Desired)+1)
	for k, v := range d.Desired {
		desired[k] = v
	}
	desired["$version"] = d.DesiredVersion
	reported := make(map[string]any, len(d.Reported)+1)
	for k, v := range d.Reported {
		reported[k] = v
	}
	reported["$version"] = d.ReportedVersion
	return map[string]any{"desired": desired, "reported": reported}
}

func stamp(now time.Time) string { return herd.NewTime(now).String() }

const (
	metaLastUpdated        = "$lastUpdated"
	metaLastUpdatedVersion = "$lastUpdatedVersion"
)
