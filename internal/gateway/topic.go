package gateway

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
)

// Kind is what a device's PUBLISH asks for (§8.7).
type Kind int

// The device-to-hub topics of the Azure dialect.
const (
	// KindTelemetry: devices/{id}/messages/events/{bag}.
	KindTelemetry Kind = iota + 1
	// KindTwinGet: $iothub/twin/GET/?$rid={rid}.
	KindTwinGet
	// KindTwinReported: $iothub/twin/PATCH/properties/reported/?$rid={rid}.
	KindTwinReported
	// KindMethodResponse: $iothub/methods/res/{status}/?$rid={rid}.
	KindMethodResponse
)

// Topic is a parsed device-to-hub topic.
type Topic struct {
	Kind Kind
	// RID is the literal $rid value (echoed back byte for byte, §8.7).
	RID string
	// Status is the device's status of a method response.
	Status int
	// Bag is the raw (still URL-encoded) property bag of telemetry.
	Bag string
}

// errForeign marks a topic that names another device.
var errForeign = errors.New("the topic belongs to another device")

const (
	twinGetPrefix      = "$iothub/twin/GET/"
	twinReportedPrefix = "$iothub/twin/PATCH/properties/reported/"
	methodResPrefix    = "$iothub/methods/res/"
)

// ParseTopic parses the topic of a PUBLISH from device deviceID. Any topic
// that is not one of the four the dialect defines for this device is an
// error (the connection is then closed, §8.11).
func ParseTopic(deviceID, topic string) (Topic, error) {
	switch {
	case strings.HasPrefix(topic, "devices/"):
		return parseTelemetry(deviceID, topic)
	case strings.HasPrefix(topic, "$iothub/twin/GET"):
		return request(KindTwinGet, topic[len("$iothub/twin/GET"):], 0)
	case strings.HasPrefix(topic, "$iothub/twin/PATCH/properties/reported"):
		return request(KindTwinReported, topic[len("$iothub/twin/PATCH/properties/reported"):], 0)
	case strings.HasPrefix(topic, methodResPrefix):
		rest := topic[len(methodResPrefix):]
		i := strings.IndexAny(rest, "/?")
		if i <= 0 {
			return Topic{}, fmt.Errorf("method response topic %q has no status", topic)
		}
		status, err := strconv.Atoi(rest[:i])
		if err != nil {
			return Topic{}, fmt.Errorf("method response status %q is not an integer", rest[:i])
		}
		return request(KindMethodResponse, rest[i:], status)
	}
	return Topic{}, fmt.Errorf("topic %q is not part of the IoT Hub MQTT dialect", topic)
}

func request(k Kind, query string, status int) (Topic, error) {
	rid, err := ridOf(query)
	if err != nil {
		return Topic{}, err
	}
	return Topic{Kind: k, RID: rid, Status: status}, nil
}

// identityTopic is the topic root of a connection identity:
// devices/{deviceId}, or devices/{deviceId}/modules/{moduleId}.
func identityTopic(id string) string {
	if dev, mod := herd.SplitIdentity(id); mod != "" {
		return "devices/" + dev + "/modules/" + mod
	}
	return "devices/" + id
}

// parseTelemetry parses devices/{id}/messages/events[/{bag}] (for a module
// devices/{id}/modules/{mid}/messages/events[/{bag}]).
func parseTelemetry(deviceID, topic string) (Topic, error) {
	base := identityTopic(deviceID)
	rest, ok := strings.CutPrefix(topic, base+"/messages/events")
	if !ok {
		if !strings.HasPrefix(topic, base+"/") {
			return Topic{}, errForeign
		}
		return Topic{}, fmt.Errorf("topic %q is not a telemetry topic", topic)
	}
	if rest == "" {
		return Topic{Kind: KindTelemetry}, nil
	}
	bag, ok := strings.CutPrefix(rest, "/")
	if !ok {
		return Topic{}, fmt.Errorf("topic %q is not a telemetry topic", topic)
	}
	return Topic{Kind: KindTelemetry, Bag: bag}, nil
}

// ridOf reads the $rid from the end of a request topic: "/?$rid=…" or
// "?$rid=…", possibly with other parameters. The rid must be present and
// non-empty.
func ridOf(s string) (string, error) {
	s = strings.TrimPrefix(s, "/")
	q, ok := strings.CutPrefix(s, "?")
	if !ok {
		return "", fmt.Errorf("request topic has no query with $rid")
	}
	for _, pair := range strings.Split(q, "&") {
		if v, ok := strings.CutPrefix(pair, "$rid="); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("request topic has no $rid")
}

// ParseFilter maps a SUBSCRIBE topic filter of device deviceID to the
// feature it enables. Only the filters of §8.6 exist; anything else (other
// wildcards, another device's topics, modules) is an error.
func ParseFilter(deviceID, filter string) (bus.Feature, error) {
	switch filter {
	case "$iothub/methods/POST/#":
		return bus.Methods, nil
	case "$iothub/twin/res/#":
		return bus.TwinResponses, nil
	case "$iothub/twin/PATCH/properties/desired/#":
		return bus.Desired, nil
	case "devices/" + deviceID + "/messages/devicebound/#":
		return bus.C2D, nil
	}
	if strings.HasPrefix(filter, "devices/") && !strings.HasPrefix(filter, identityTopic(deviceID)+"/") {
		return 0, errForeign
	}
	return 0, fmt.Errorf("topic filter %q is not supported", filter)
}

// TwinResponseTopic is $iothub/twin/res/{status}/?$rid={rid}, with
// &$version={v} when version > 0.
func TwinResponseTopic(status int, rid string, version int64) string {
	t := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + rid
	if version > 0 {
		t += "&$version=" + strconv.FormatInt(version, 10)
	}
	return t
}

// DesiredTopic is $iothub/twin/PATCH/properties/desired/?$version={v}.
func DesiredTopic(version int64) string {
	return "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(version, 10)
}

// MethodTopic is $iothub/methods/POST/{name}/?$rid={rid}.
func MethodTopic(name, rid string) string {
	return "$iothub/methods/POST/" + name + "/?$rid=" + rid
}
