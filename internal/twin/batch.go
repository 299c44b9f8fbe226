package twin

import (
	"encoding/json"
	"strconv"
	"time"
)

// This file serves writers that apply one patch to many twins at once
// (twin-update jobs) inside the store, as JSON merge patches (RFC 7396),
// instead of decoding every twin into a Doc. The results are the same as
// Doc.Apply's; the store conformance suite's TwinBatchMatchesApply
// (internal/store/storetest/jobs.go) holds the two together.

// VersionMarker stands in MergePlan.DesiredMeta for each twin's new desired
// $version: the store replaces the text `"$lastUpdatedVersion":-1` with the
// twin's own number. Twin keys cannot contain '$', so the marker matches
// nothing else.
const VersionMarker = `"$lastUpdatedVersion":-1`

// MergePlan is a non-replacing service patch expressed as JSON merge
// patches over the stored sections (tags, desired, desired $metadata):
//
//	tags     = merge(tags, Tags)                       when Tags != nil
//	desired  = merge(desired, Desired)                 when Desired != nil
//	metadata = merge(merge(metadata, MetaClear), DesiredMeta)
//
// A section set to null by the patch has ClearTags / ClearDesired set
// instead: it becomes {} (and desired $metadata becomes DesiredMeta).
// MetaClear deletes the metadata subtrees of properties the patch sets to a
// non-object value (a merge would keep their stale children); it is nil
// when there are none.
type MergePlan struct {
	Tags, Desired           []byte
	ClearTags, ClearDesired bool
	MetaClear               []byte
	DesiredMeta             []byte
	// TagsPatchSize and DesiredPatchSize are the patch texts' lengths,
	// which bound how much a merge can grow a section.
	TagsPatchSize, DesiredPatchSize int
}

// SetsTags and SetsDesired say which sections the plan writes.
func (m *MergePlan) SetsTags() bool    { return m.Tags != nil || m.ClearTags }
func (m *MergePlan) SetsDesired() bool { return m.Desired != nil || m.ClearDesired }

// Plan returns p as a MergePlan stamped at now.
func (p Patch) Plan(now time.Time) (*MergePlan, error) {
	var m MergePlan
	var err error
	if p.Tags.Set {
		if p.Tags.Value == nil {
			m.ClearTags = true
		} else if m.Tags, err = json.Marshal(p.Tags.Value); err != nil {
			return nil, err
		}
		m.TagsPatchSize = len(m.Tags)
	}
	if p.Desired.Set {
		st := map[string]any{metaLastUpdated: stamp(now), metaLastUpdatedVersion: -1}
		var meta map[string]any
		if p.Desired.Value == nil {
			m.ClearDesired = true
			meta = st
		} else {
			if m.Desired, err = json.Marshal(p.Desired.Value); err != nil {
				return nil, err
			}
			m.DesiredPatchSize = len(m.Desired)
			meta = metaPatch(p.Desired.Value, st)
			if c := metaClear(p.Desired.Value); c != nil {
				if m.MetaClear, err = json.Marshal(c); err != nil {
					return nil, err
				}
			}
		}
		if m.DesiredMeta, err = json.Marshal(meta); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// metaPatch is the merge patch that stamps every node a desired patch
// touches (see updateMeta).
func metaPatch(patch map[string]any, st map[string]any) map[string]any {
	out := make(map[string]any, len(patch)+len(st))
	for k, v := range st {
		out[k] = v
	}
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			out[k] = nil
		case map[string]any:
			out[k] = metaPatch(v, st)
		default:
			out[k] = st
		}
	}
	return out
}

// metaClear is the merge patch that removes the metadata of every property
// a desired patch sets to a non-object value, or nil if there is none.
func metaClear(patch map[string]any) map[string]any {
	var out map[string]any
	for k, v := range patch {
		var c any
		switch v := v.(type) {
		case nil:
			continue
		case map[string]any:
			sub := metaClear(v)
			if sub == nil {
				continue
			}
			c = sub
		}
		if out == nil {
			out = map[string]any{}
		}
		out[k] = c
	}
	return out
}

// ClearedNotification is the desired-change notification of a write that
// cleared the desired section of a twin that held the given keys: each key
// as null, with "$version", so that a device merging it ends up with none.
func ClearedNotification(keys []string, version int64) []byte {
	m := make(map[string]any, len(keys)+1)
	for _, k := range keys {
		m[k] = nil
	}
	m["$version"] = version
	b, _ := json.Marshal(m) // strings, nulls and an int64 always encode
	return b
}

// NotificationBody returns a function giving the desired-change
// notification of p at a twin's new desired version: the desired patch
// with "$version", as Update.Desired encodes. The patch is encoded once.
// When p clears the desired section the body is {"$version":N}: the
// caller sends ClearedNotification instead to twins that held keys.
func (p Patch) NotificationBody() (func(version int64) []byte, error) {
	if !p.Desired.Set {
		return nil, nil
	}
	inner := []byte("{}")
	if p.Desired.Value != nil {
		var err error
		if inner, err = json.Marshal(p.Desired.Value); err != nil {
			return nil, err
		}
	}
	prefix := append([]byte{}, inner[:len(inner)-1]...)
	if len(inner) > 2 {
		prefix = append(prefix, ',')
	}
	prefix = append(prefix, `"$version":`...)
	return func(version int64) []byte {
		b := make([]byte, 0, len(prefix)+24)
		b = append(b, prefix...)
		b = strconv.AppendInt(b, version, 10)
		return append(b, '}')
	}, nil
}
