package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/method"
	"github.com/herd-iot/herd/internal/twin"
)

// request is the body of PUT /jobs/v2/{jobId} (§6.2) with every member
// kept raw, so that null, absent and wrongly typed values can be told
// apart and answered as Azure does.
type request struct {
	JobID                     json.RawMessage `json:"jobId"`
	Type                      json.RawMessage `json:"type"`
	CloudToDeviceMethod       json.RawMessage `json:"cloudToDeviceMethod"`
	UpdateTwin                json.RawMessage `json:"updateTwin"`
	QueryCondition            json.RawMessage `json:"queryCondition"`
	StartTime                 json.RawMessage `json:"startTime"`
	MaxExecutionTimeInSeconds json.RawMessage `json:"maxExecutionTimeInSeconds"`
	Herd                      json.RawMessage `json:"herd"`
}

// legacyTypes are job type names from the 2016–2019 documentation that
// Azure rejects with GenericBadRequest (MicrosoftDocs/azure-docs#29484).
var legacyTypes = map[string]bool{
	"scheduleDirectRequest": true, "scheduleTwinUpdate": true, "scheduleDirectMethod": true,
}

func isNull(m json.RawMessage) bool {
	return len(m) == 0 || string(bytes.TrimSpace(m)) == "null"
}

func badRequest(format string, args ...any) error {
	return herd.Errorf(herd.ErrGenericBadRequest, format, args...)
}

func invalid(format string, args ...any) error {
	return herd.Errorf(herd.ErrArgumentInvalid, format, args...)
}

// ValidateJobID checks a job id: at most 64 US-ASCII letters, digits and
// '-' (§6.1).
func ValidateJobID(id string) error {
	if id == "" {
		return herd.Errorf(herd.ErrArgumentNull, "the job id is empty")
	}
	if len(id) > MaxJobIDLength {
		return invalid("job id %.20q… is longer than %d characters", id, MaxJobIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return invalid("job id %q may contain only letters, digits and '-'", id)
		}
	}
	return nil
}

// ParseRequest validates the body of PUT /jobs/v2/{pathID} and returns the
// job to store (status queued). now fills a null or absent startTime.
func ParseRequest(pathID string, body []byte, now time.Time) (*Record, error) {
	if err := ValidateJobID(pathID); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, herd.Errorf(herd.ErrArgumentNull, "the request body is empty")
	}
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if asTypeErr(err, &typeErr) {
			return nil, badRequest("the job request must be a JSON object")
		}
		return nil, herd.Errorf(herd.ErrIotHubFormatError, "the request body is not valid JSON: %v", err)
	}
	r := &Record{}
	r.JobID = pathID
	r.Status = herd.JobQueued
	if !isNull(req.JobID) {
		id, err := idString(req.JobID)
		if err != nil {
			return nil, err
		}
		if id != pathID {
			return nil, invalid("the body's jobId %q does not match the path's %q", id, pathID)
		}
	}
	if err := parseType(req, r); err != nil {
		return nil, err
	}
	if err := parseCondition(req.QueryCondition, r); err != nil {
		return nil, err
	}
	created := herd.NewTime(now)
	r.CreatedTime = &created
	start := created
	if !isNull(req.StartTime) {
		var s string
		if json.Unmarshal(req.StartTime, &s) != nil || strings.TrimSpace(s) == "" {
			return nil, invalid("startTime must be an ISO 8601 timestamp string or null, not %s", req.StartTime)
		}
		t, err := herd.ParseTime(s)
		if err != nil {
			return nil, invalid("startTime %q is not an ISO 8601 timestamp", s)
		}
		if !t.IsZero() {
			start = t
		}
	}
	r.StartTime = &start
	r.MaxExecutionTimeInSeconds = DefaultMaxExecution
	if !isNull(req.MaxExecutionTimeInSeconds) {
		v, err := wholeNumber(req.MaxExecutionTimeInSeconds)
		if err != nil || v <= 0 || v > MaxMaxExecution {
			return nil, invalid("maxExecutionTimeInSeconds must be a whole number of seconds from 1 to %d, not %s", MaxMaxExecution, req.MaxExecutionTimeInSeconds)
		}
		r.MaxExecutionTimeInSeconds = v
	}
	opts, err := parseOptions(req.Herd)
	if err != nil {
		return nil, err
	}
	if opts != nil && opts.Retry != nil && r.Type != herd.JobDeviceMethod {
		// A twin write fails only when the device was deleted or its twin
		// would pass a size limit: another attempt changes neither.
		return nil, invalid("herd.retry applies to method jobs (scheduleDeviceMethod), not to %s jobs", r.Type)
	}
	r.Herd = opts
	r.DeviceJobStatistics = &herd.DeviceJobStatistics{}
	return r, nil
}

// wholeNumber reads a JSON integer. A number written as a string ("10")
// is refused: encoding/json would accept it into a json.Number.
func wholeNumber(raw json.RawMessage) (int64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' {
		return 0, errors.New("not a number")
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, err
	}
	return n.Int64()
}

func asTypeErr(err error, target **json.UnmarshalTypeError) bool {
	e, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*target = e
	}
	return ok
}

// idString reads a jobId that the Node SDK may send as a number.
func idString(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&n) == nil {
		return n.String(), nil
	}
	return "", invalid("jobId must be a string or a number")
}

func parseType(req request, r *Record) error {
	if isNull(req.Type) {
		return herd.Errorf(herd.ErrArgumentNull, "type is required: scheduleDeviceMethod or scheduleUpdateTwin")
	}
	var t string
	if json.Unmarshal(req.Type, &t) != nil {
		return badRequest("type must be a string: scheduleDeviceMethod or scheduleUpdateTwin")
	}
	switch herd.JobType(t) {
	case herd.JobDeviceMethod:
		r.Type = herd.JobDeviceMethod
		if !isNull(req.UpdateTwin) {
			return invalid("a scheduleDeviceMethod job takes cloudToDeviceMethod, not updateTwin")
		}
		if isNull(req.CloudToDeviceMethod) {
			return herd.Errorf(herd.ErrArgumentNull, "a scheduleDeviceMethod job needs cloudToDeviceMethod")
		}
		m, err := parseMethod(req.CloudToDeviceMethod)
		if err != nil {
			return err
		}
		r.CloudToDeviceMethod = m
		r.Request, _ = json.Marshal(m)
	case herd.JobUpdateTwin:
		r.Type = herd.JobUpdateTwin
		if !isNull(req.CloudToDeviceMethod) {
			return invalid("a scheduleUpdateTwin job takes updateTwin, not cloudToDeviceMethod")
		}
		if isNull(req.UpdateTwin) {
			return herd.Errorf(herd.ErrArgumentNull, "a scheduleUpdateTwin job needs updateTwin")
		}
		p, err := parseUpdateTwin(req.UpdateTwin)
		if err != nil {
			return err
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, req.UpdateTwin); err != nil {
			return herd.Errorf(herd.ErrIotHubFormatError, "updateTwin is not valid JSON: %v", err)
		}
		r.UpdateTwin, r.Request = p, compact.Bytes()
	default:
		if legacyTypes[t] {
			return badRequest("job type %q is not supported; use scheduleDeviceMethod or scheduleUpdateTwin", t)
		}
		return badRequest("job type %q is not supported on /jobs/v2; use scheduleDeviceMethod or scheduleUpdateTwin", t)
	}
	return nil
}

func parseCondition(raw json.RawMessage, r *Record) error {
	if isNull(raw) {
		return herd.Errorf(herd.ErrArgumentNull, "queryCondition is required (the WHERE part of a twin query, or * for every device)")
	}
	var q string
	if json.Unmarshal(raw, &q) != nil {
		return invalid("queryCondition must be a string")
	}
	q = strings.TrimSpace(q)
	if q == "" {
		return herd.Errorf(herd.ErrArgumentNull, "queryCondition is empty (use * for every device)")
	}
	if len(q) > MaxQueryConditionLength {
		// Azure answers an oversize query with 412 (§6.2).
		return herd.Errorf(herd.ErrPreconditionFailed, "queryCondition is %d characters; the limit is %d", len(q), MaxQueryConditionLength)
	}
	r.QueryCondition = q
	return nil
}

// parseUpdateTwin checks a twin job's patch (§6.2): etag "*", tags and/or
// properties.desired within the twin limits of §4.4; read-only members and
// an empty reported section are ignored.
func parseUpdateTwin(raw json.RawMessage) (*herd.TwinPatch, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, herd.Errorf(herd.ErrIotHubFormatError, "updateTwin is not valid JSON: %v", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("updateTwin must be a JSON object with tags and/or properties.desired")
	}
	etag, _ := obj["etag"].(string)
	if twin.NormalizeETag(etag) != "*" {
		if _, present := obj["etag"]; !present || obj["etag"] == nil {
			return nil, invalid(`updateTwin.etag is required and must be "*": a job updates every twin unconditionally`)
		}
		return nil, invalid(`updateTwin.etag must be "*", not %q: a job updates every twin unconditionally`, etag)
	}
	p, err := twin.ParseServiceValue(obj)
	if err != nil {
		return nil, err
	}
	if !p.Tags.Set && !p.Desired.Set {
		return nil, invalid("updateTwin changes nothing: give tags and/or properties.desired")
	}
	if p.Tags.Value != nil {
		if n := twin.Size(p.Tags.Value); n > twin.MaxTagsSize {
			return nil, invalid("updateTwin.tags is %d bytes; the limit is %d", n, twin.MaxTagsSize)
		}
	}
	if p.Desired.Value != nil {
		if n := twin.Size(p.Desired.Value); n > twin.MaxDesiredSize {
			return nil, invalid("updateTwin.properties.desired is %d bytes; the limit is %d", n, twin.MaxDesiredSize)
		}
	}
	return EchoPatch(p), nil
}

// Patch returns a twin job's patch as the twin package applies it.
func Patch(r *Record) (twin.Patch, error) {
	if r.Type != herd.JobUpdateTwin || len(r.Request) == 0 {
		return twin.Patch{}, invalid("job %q has no updateTwin", r.JobID)
	}
	return twin.ParseService(r.Request)
}

// EchoPatch is a twin patch as a job's updateTwin member echoes it.
func EchoPatch(p twin.Patch) *herd.TwinPatch {
	out := &herd.TwinPatch{ETag: "*", Tags: p.Tags.Value}
	if p.Desired.Set {
		out.Properties = &herd.PatchProperties{Desired: p.Desired.Value}
	}
	return out
}

// parseMethod checks a method job's cloudToDeviceMethod member with the
// direct-method rules (§5.1, §5.2; method.Validate) and fills in its
// defaults. Numbers must be whole; timeoutInSeconds (older clients) stands
// for responseTimeoutInSeconds.
func parseMethod(raw json.RawMessage) (*herd.MethodRequest, error) {
	var m struct {
		MethodName               *string         `json:"methodName"`
		Payload                  json.RawMessage `json:"payload"`
		ResponseTimeoutInSeconds json.RawMessage `json:"responseTimeoutInSeconds"`
		TimeoutInSeconds         json.RawMessage `json:"timeoutInSeconds"`
		ConnectTimeoutInSeconds  json.RawMessage `json:"connectTimeoutInSeconds"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalid("cloudToDeviceMethod must be an object with methodName, payload, responseTimeoutInSeconds and connectTimeoutInSeconds: %v", err)
	}
	out := &herd.MethodRequest{}
	if m.MethodName != nil {
		out.MethodName = *m.MethodName
	}
	timeout := m.ResponseTimeoutInSeconds
	if isNull(timeout) {
		timeout = m.TimeoutInSeconds
	}
	for _, f := range []struct {
		name string
		v    json.RawMessage
		dst  *int
	}{{"responseTimeoutInSeconds", timeout, &out.ResponseTimeoutInSeconds},
		{"connectTimeoutInSeconds", m.ConnectTimeoutInSeconds, &out.ConnectTimeoutInSeconds}} {
		if isNull(f.v) {
			continue
		}
		v, err := wholeNumber(f.v)
		if err != nil || v < 0 || v > 1<<20 {
			return nil, invalid("cloudToDeviceMethod.%s must be a whole number of seconds, not %s", f.name, f.v)
		}
		*f.dst = int(v)
	}
	if !isNull(m.Payload) {
		var compact bytes.Buffer
		if err := json.Compact(&compact, m.Payload); err != nil {
			return nil, invalid("cloudToDeviceMethod.payload is not valid JSON")
		}
		out.Payload = compact.Bytes()
	}
	if err := method.Validate(out); err != nil {
		var e *herd.Error
		if errors.As(err, &e) {
			return nil, herd.Errorf(e.Code, "cloudToDeviceMethod: %s", e.Message)
		}
		return nil, err
	}
	return out, nil
}
