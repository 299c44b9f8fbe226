package twin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herd-iot/herd"
)

// Limits from §4.4 of the compatibility reference.
const (
	MaxTagsSize     = 8 * 1024
	MaxDesiredSize  = 32 * 1024
	MaxReportedSize = 32 * 1024
	MaxKeyLength    = 1024
	MaxStringLength = 4 * 1024
	MaxDepth        = 10
	maxSafeInteger  = 4503599627370495
	minSafeInteger  = -4503599627370496
)

// Change is one section of a patch. Set says the section appeared; a nil
// Value with Set means the section was JSON null: remove everything.
type Change struct {
	Set   bool
	Value map[string]any
}

// Patch is a parsed write to a twin: the tags and desired properties of a
// service write, or the reported properties of a device write.
type Patch struct {
	Tags     Change
	Desired  Change
	Reported Change
}

// Empty reports whether the patch changes nothing.
func (p Patch) Empty() bool {
	return !p.Tags.Set && !p.Desired.Set && !p.Reported.Set
}

func invalid(format string, args ...any) error {
	return herd.Errorf(herd.ErrArgumentInvalid, format, args...)
}

// readOnlyFields are twin members a client may echo back in a write (the C#
// SDK serialises a whole Twin); they are ignored.
var readOnlyFields = map[string]bool{
	"deviceId": true, "moduleId": true, "etag": true, "deviceEtag": true,
	"status": true, "statusReason": true, "statusUpdateTime": true,
	"connectionState": true, "lastActivityTime": true,
	"cloudToDeviceMessageCount": true, "authenticationType": true,
	"x509Thumbprint": true, "version": true, "capabilities": true,
	"modelId": true, "deviceScope": true, "parentScopes": true,
	"configurations": true,
}

// decode parses JSON keeping numbers as json.Number, so integers survive
// exactly.
func decode(body []byte) (any, error) {
	if !utf8.Valid(body) {
		return nil, herd.Errorf(herd.ErrIotHubFormatError, "the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, herd.Errorf(herd.ErrIotHubFormatError, "the body is not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, herd.Errorf(herd.ErrIotHubFormatError, "the body has data after the JSON value")
	}
	return v, nil
}

// ParseService parses the body of PATCH or PUT /twins/{id}, or the
// updateTwin member of a twin job: an object with "tags" and/or
// "properties": {"desired": …}. Read-only twin members are ignored, as is an
// empty "reported"; anything else is an ArgumentInvalid error.
func ParseService(body []byte) (Patch, error) {
	v, err := decode(body)
	if err != nil {
		return Patch{}, err
	}
	return ParseServiceValue(v)
}

// ParseServiceValue is ParseService on an already decoded JSON value.
func ParseServiceValue(v any) (Patch, error) {
	root, ok := v.(map[string]any)
	if !ok {
		return Patch{}, invalid("a twin patch must be a JSON object")
	}
	var p Patch
	for k, v := range root {
		switch {
		case k == "tags":
			c, err := section("tags", v)
			if err != nil {
				return Patch{}, err
			}
			p.Tags = c
		case k == "properties":
			if v == nil {
				continue
			}
			props, ok := v.(map[string]any)
			if !ok {
				return Patch{}, invalid("properties must be an object with desired properties")
			}
			for pk, pv := range props {
				switch pk {
				case "desired":
					c, err := section("properties.desired", pv)
					if err != nil {
						return Patch{}, err
					}
					p.Desired = c
				case "reported":
					if r, ok := pv.(map[string]any); pv == nil || ok && len(withoutReadOnly(r)) == 0 {
						continue
					}
					return Patch{}, invalid("reported properties can only be written by the device")
				default:
					return Patch{}, invalid("properties.%s is not a twin section; use properties.desired", pk)
				}
			}
		case k == "desired" || k == "reported":
			return Patch{}, invalid("%q must be inside \"properties\": {\"properties\": {\"desired\": …}}", k)
		case readOnlyFields[k]:
		default:
			return Patch{}, invalid("%q is not a twin member that can be written; use tags or properties.desired", k)
		}
	}
	return p, nil
}

// ParseReported parses a device's reported-properties patch: a bare JSON
// object merged into properties.reported.
func ParseReported(body []byte) (Patch, error) {
	v, err := decode(body)
	if err != nil {
		return Patch{}, err
	}
	c, err := section("reported properties", v)
	if err != nil {
		return Patch{}, err
	}
	if c.Value == nil {
		return Patch{}, invalid("reported properties patch must be a JSON object")
	}
	return Patch{Reported: c}, nil
}

// withoutReadOnly drops "$version" and "$metadata", which clients echo back
// from a twin they read.
func withoutReadOnly(m map[string]any) map[string]any {
	if _, ok := m["$version"]; !ok {
		if _, ok := m["$metadata"]; !ok {
			return m
		}
	}
	out := maps.Clone(m)
	delete(out, "$version")
	delete(out, "$metadata")
	return out
}

func section(name string, v any) (Change, error) {
	if v == nil {
		return Change{Set: true}, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return Change{}, invalid("%s must be a JSON object", name)
	}
	m = withoutReadOnly(m)
	if err := validateObject(name, m, 1); err != nil {
		return Change{}, err
	}
	return Change{Set: true, Value: m}, nil
}

func validateObject(path string, m map[string]any, depth int) error {
	if depth > MaxDepth {
		return tooDeep(path)
	}
	for k, v := range m {
		if err := validateKey(path, k); err != nil {
			return err
		}
		if err := validateValue(path+"."+k, v, depth); err != nil {
			return err
		}
	}
	return nil
}

func tooDeep(path string) error {
	return invalid("%s: objects and arrays may be nested at most %d levels deep", path, MaxDepth)
}

func validateKey(path, k string) error {
	switch {
	case k == "":
		return invalid("%s: property names cannot be empty", path)
	case len(k) > MaxKeyLength:
		return invalid("%s: property name %.20q… is longer than %d bytes", path, k, MaxKeyLength)
	case !utf8.ValidString(k):
		return invalid("%s: property name %q is not valid UTF-8", path, k)
	case strings.ContainsAny(k, ".$ "):
		return invalid("%s: property name %q contains '.', '$' or a space, which twins do not allow", path, k)
	}
	for _, r := range k {
		if isControl(r) {
			return invalid("%s: property name %q contains a control character", path, k)
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) }

func validateValue(path string, v any, depth int) error {
	switch v := v.(type) {
	case nil, bool:
		return nil
	case string:
		if len(v) > MaxStringLength {
			return invalid("%s: string values may be at most %d bytes", path, MaxStringLength)
		}
	case json.Number:
		if i, err := v.Int64(); err == nil {
			if i < minSafeInteger || i > maxSafeInteger {
				return invalid("%s: integer %s is outside [%d, %d]", path, v, int64(minSafeInteger), int64(maxSafeInteger))
			}
		} else if _, err := v.Float64(); err != nil {
			return invalid("%s: number %s is out of range", path, v)
		}
	case float64:
		if v == float64(int64(v)) && (v < minSafeInteger || v > maxSafeInteger) {
			return invalid("%s: integer %v is outside [%d, %d]", path, v, int64(minSafeInteger), int64(maxSafeInteger))
		}
	case map[string]any:
		return validateObject(path, v, depth+1)
	case []any:
		// An array is a level of nesting like an object: without this,
		// [[[…]]] escaped the limit (and SQLite's JSON refuses 1000
		// levels with an internal error).
		if depth+1 > MaxDepth {
			return tooDeep(path)
		}
		for i, e := range v {
			if err := validateValue(fmt.Sprintf("%s[%d]", path, i), e, depth+1); err != nil {
				return err
			}
		}
	default:
		return invalid("%s: unsupported value", path)
	}
	return nil
}

// Size is a section's size by Azure's algorithm: the sum of key lengths and
// value sizes, where strings count their characters (control characters
// excluded), numbers 8 bytes, booleans 4 and objects their contents.
func Size(v any) int {
	switch v := v.(type) {
	case string:
		n := 0
		for _, r := range v {
			if !isControl(r) {
				n++
			}
		}
		return n
	case json.Number, float64, int64, int:
		return 8
	case bool:
		return 4
	case map[string]any:
		n := 0
		for k, e := range v {
			n += Size(k) + Size(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range v {
			n += Size(e)
		}
		return n
	}
	return 0
}

// merge applies a JSON merge patch (RFC 7396 without arrays merging: null
// deletes, objects merge, anything else replaces) to dst, which it returns
// as a new map; dst itself is not modified.
func merge(dst, patch map[string]any) map[string]any {
	out := maps.Clone(dst)
	if out == nil {
		out = map[string]any{}
	}
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			delete(out, k)
		case map[string]any:
			old, _ := out[k].(map[string]any)
			out[k] = merge(old, v)
		default:
			out[k] = v
		}
	}
	return out
}

// updateMeta returns the $metadata tree after patch was merged into a
// section whose old content was old. Every node the patch touches, and
// every ancestor, gets the new stamp; deleted keys lose their node.
func updateMeta(meta, old, patch map[string]any, st map[string]any) map[string]any {
	out := maps.Clone(meta)
	if out == nil {
		out = map[string]any{}
	}
	maps.Copy(out, st)
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			delete(out, k)
		case map[string]any:
			oldChild, wasObject := old[k].(map[string]any)
			childMeta, _ := out[k].(map[string]any)
			if !wasObject {
				oldChild, childMeta = nil, nil
			}
			out[k] = updateMeta(childMeta, oldChild, v, st)
		default:
			out[k] = maps.Clone(st)
		}
	}
	return out
}

// buildMeta returns a fresh $metadata tree for a whole section.
func buildMeta(section map[string]any, st map[string]any) map[string]any {
	out := maps.Clone(st)
	for k, v := range section {
		if m, ok := v.(map[string]any); ok {
			out[k] = buildMeta(m, st)
		} else {
			out[k] = maps.Clone(st)
		}
	}
	return out
}

// Update is the outcome of applying a patch: what connected devices must be
// told about desired properties (nil when desired did not change).
type Update struct {
	// DesiredVersion is the new desired $version.
	DesiredVersion int64
	// Desired is the notification body for the device: the desired patch
	// (or, for a replace, the whole desired section) plus "$version".
	Desired map[string]any
}

// Apply merges a patch into the document: tags and desired for a service
// write, reported for a device write. With replace (PUT /twins/{id}) the
// given sections replace the old ones instead. Nothing changes if the patch
// is invalid or would break a size limit. Every write bumps Version and
// ETag; a desired write bumps DesiredVersion by exactly one, a reported
// write ReportedVersion.
func (d *Doc) Apply(p Patch, replace bool, now time.Time) (Update, error) {
	if p.Empty() {
		return Update{}, nil
	}
	next := *d
	var up Update
	at := stamp(now)
	if p.Tags.Set {
		if replace || p.Tags.Value == nil {
			next.Tags = merge(nil, p.Tags.Value)
		} else {
			next.Tags = merge(d.Tags, p.Tags.Value)
		}
		if n := Size(next.Tags); n > MaxTagsSize {
			return Update{}, invalid("tags would be %d bytes; the limit is %d", n, MaxTagsSize)
		}
	}
	if p.Desired.Set {
		next.DesiredVersion = d.DesiredVersion + 1
		st := map[string]any{metaLastUpdated: at, metaLastUpdatedVersion: next.DesiredVersion}
		if replace || p.Desired.Value == nil {
			next.Desired = merge(nil, p.Desired.Value)
			next.DesiredMeta = buildMeta(next.Desired, st)
			// A device merges what it is sent into the desired properties
			// it holds, so keys the write removed are sent as null.
			up.Desired = maps.Clone(next.Desired)
			for k := range d.Desired {
				if _, kept := next.Desired[k]; !kept {
					up.Desired[k] = nil
				}
			}
		} else {
			next.Desired = merge(d.Desired, p.Desired.Value)
			next.DesiredMeta = updateMeta(d.DesiredMeta, d.Desired, p.Desired.Value, st)
			up.Desired = maps.Clone(p.Desired.Value)
		}
		if n := Size(next.Desired); n > MaxDesiredSize {
			return Update{}, invalid("desired properties would be %d bytes; the limit is %d", n, MaxDesiredSize)
		}
		up.Desired["$version"] = next.DesiredVersion
		up.DesiredVersion = next.DesiredVersion
	}
	if p.Reported.Set {
		next.ReportedVersion = d.ReportedVersion + 1
		st := map[string]any{metaLastUpdated: at}
		next.Reported = merge(d.Reported, p.Reported.Value)
		next.ReportedMeta = updateMeta(d.ReportedMeta, d.Reported, p.Reported.Value, st)
		if n := Size(next.Reported); n > MaxReportedSize {
			return Update{}, invalid("reported properties would be %d bytes; the limit is %d", n, MaxReportedSize)
		}
	}
	next.Version = d.Version + 1
	next.ETag = d.ETag + 1
	*d = next
	return up, nil
}
