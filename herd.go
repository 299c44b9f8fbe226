// Package herd holds the vocabulary that Herd's server and its Go SDKs share:
// devices, twins, direct methods, jobs and the Error type with stable codes.
//
// The JSON shapes of these types are the Azure IoT Hub REST API's (api-version
// 2021-04-12), so that the official Azure IoT SDKs and Herd's own SDKs read
// the same documents. This package uses only the standard library.
package herd

import (
	"encoding/json"
	"strings"
	"time"
)

// APIVersion is the Azure IoT Hub REST API version Herd speaks and its SDKs
// send.
const APIVersion = "2021-04-12"

// TimeLayout is how Azure writes timestamps: UTC with 7 fractional digits.
const TimeLayout = "2006-01-02T15:04:05.0000000Z"

// zeroTime is how Azure writes a timestamp that was never set.
const zeroTime = "0001-01-01T00:00:00Z"

// Time is a UTC instant that encodes to JSON the way Azure IoT Hub writes
// timestamps (7 fractional digits; the zero time as 0001-01-01T00:00:00Z)
// and decodes any RFC 3339 form.
type Time struct{ time.Time }

// NewTime returns t as a Time in UTC.
func NewTime(t time.Time) Time {
	if t.IsZero() {
		return Time{}
	}
	return Time{t.UTC()}
}

// String formats t in Azure's layout.
func (t Time) String() string {
	if t.IsZero() {
		return zeroTime
	}
	return t.UTC().Format(TimeLayout)
}

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.String() + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler. It accepts null, RFC 3339 with
// or without a zone (no zone means UTC, as in Azure's device job records).
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	parsed, err := ParseTime(s)
	if err != nil {
		return err
	}
	*t = parsed
	return nil
}

// ParseTime parses an ISO 8601 timestamp as Azure and its SDKs write them.
func ParseTime(s string) (Time, error) {
	if s == "" || strings.HasPrefix(s, "0001-01-01T00:00:00") {
		return Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999"} {
		if v, err := time.Parse(layout, s); err == nil {
			return Time{v.UTC()}, nil
		}
	}
	return Time{}, Errorf(ErrArgumentInvalid, "%q is not an ISO 8601 timestamp", s)
}

// DeviceStatus says whether a device may connect.
type DeviceStatus string

// Device statuses.
const (
	DeviceEnabled  DeviceStatus = "enabled"
	DeviceDisabled DeviceStatus = "disabled"
)

// ConnectionState says whether a device holds a connection to the hub.
type ConnectionState string

// Connection states, capitalised as Azure writes them.
const (
	Connected    ConnectionState = "Connected"
	Disconnected ConnectionState = "Disconnected"
)

// Authentication types.
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
	AuthNone                 = "none"
)

// Device is a device identity in the registry.
type Device struct {
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId"`
	ETag                       string          `json:"etag"`
	ConnectionState            ConnectionState `json:"connectionState"`
	Status                     DeviceStatus    `json:"status"`
	StatusReason               *string         `json:"statusReason"`
	ConnectionStateUpdatedTime Time            `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          Time            `json:"statusUpdatedTime"`
	LastActivityTime           Time            `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount"`
	Authentication             Authentication  `json:"authentication"`
	Capabilities               Capabilities    `json:"capabilities"`
	DeviceScope                string          `json:"deviceScope,omitempty"`
	ParentScopes               []string        `json:"parentScopes,omitempty"`
}

// Authentication is how a device proves its identity.
type Authentication struct {
	SymmetricKey   SymmetricKey   `json:"symmetricKey"`
	X509Thumbprint X509Thumbprint `json:"x509Thumbprint"`
	Type           string         `json:"type"`
}

// SymmetricKey holds a device's two base64 keys. Empty keys in a create
// request ask the hub to generate them.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// MarshalJSON writes an empty key as null, as Azure does for devices that
// authenticate with certificates (a null key decodes back to "").
func (k SymmetricKey) MarshalJSON() ([]byte, error) {
	orNull := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	return json.Marshal(struct {
		PrimaryKey   *string `json:"primaryKey"`
		SecondaryKey *string `json:"secondaryKey"`
	}{orNull(k.PrimaryKey), orNull(k.SecondaryKey)})
}

// X509Thumbprint holds the thumbprints of a self-signed device certificate:
// the hex SHA-1 or SHA-256 digest of its DER encoding.
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// Capabilities are the device's capabilities.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// RegistryStatistics counts the devices in the registry.
type RegistryStatistics struct {
	TotalDeviceCount    int64 `json:"totalDeviceCount"`
	EnabledDeviceCount  int64 `json:"enabledDeviceCount"`
	DisabledDeviceCount int64 `json:"disabledDeviceCount"`
}

// ServiceStatistics describes the hub's live state.
type ServiceStatistics struct {
	ConnectedDeviceCount int64 `json:"connectedDeviceCount"`
}

// Twin is a device twin as the service side sees it. Tags and the two
// property collections are JSON objects; Desired and Reported also carry the
// read-only "$version" and "$metadata" members.
type Twin struct {
	DeviceID                  string          `json:"deviceId"`
	ModuleID                  string          `json:"moduleId,omitempty"`
	ETag                      string          `json:"etag"`
	DeviceETag                string          `json:"deviceEtag"`
	Status                    DeviceStatus    `json:"status"`
	StatusReason              *string         `json:"statusReason"`
	StatusUpdateTime          Time            `json:"statusUpdateTime"`
	ConnectionState           ConnectionState `json:"connectionState"`
	LastActivityTime          Time            `json:"lastActivityTime"`
	CloudToDeviceMessageCount int             `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string          `json:"authenticationType"`
	X509Thumbprint            X509Thumbprint  `json:"x509Thumbprint"`
	ModelID                   string          `json:"modelId,omitempty"`
	Version                   int64           `json:"version"`
	Capabilities              Capabilities    `json:"capabilities"`
	Tags                      map[string]any  `json:"tags"`
	Properties                TwinProperties  `json:"properties"`
}

// TwinProperties holds a twin's desired and reported property collections.
type TwinProperties struct {
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
}

// TwinPatch is a change to a twin: a deep merge into tags and desired
// properties in which a nil value deletes the key. It is also the updateTwin
// member of a twin-update job, where ETag must be "*".
type TwinPatch struct {
	ETag       string           `json:"etag,omitempty"`
	Tags       map[string]any   `json:"tags,omitempty"`
	Properties *PatchProperties `json:"properties,omitempty"`
}

// PatchProperties is the properties member of a TwinPatch.
type PatchProperties struct {
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
}

// MethodRequest is a direct method call, as POSTed to /twins/{id}/methods
// and as the cloudToDeviceMethod member of a method job.
type MethodRequest struct {
	MethodName string `json:"methodName"`
	// Payload is the JSON sent to the device; nil is sent as null.
	Payload json.RawMessage `json:"payload"`
	// ResponseTimeoutInSeconds bounds the wait for the device's answer
	// (5 to 300, default 30).
	ResponseTimeoutInSeconds int `json:"responseTimeoutInSeconds,omitempty"`
	// ConnectTimeoutInSeconds bounds the wait for an offline device to
	// connect (0 to 300, default 0: it must be online already).
	ConnectTimeoutInSeconds int `json:"connectTimeoutInSeconds,omitempty"`
}

// MethodResult is a device's answer to a direct method.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// JobType is the kind of a v2 job.
type JobType string

// Job types.
const (
	JobDeviceMethod JobType = "scheduleDeviceMethod"
	JobUpdateTwin   JobType = "scheduleUpdateTwin"
)

// JobStatus is the status of a job as a whole. Note Azure's spelling
// "cancelled" (device records say "canceled").
type JobStatus string

// Job statuses.
const (
	JobQueued    JobStatus = "queued"
	JobScheduled JobStatus = "scheduled"
	JobRunning   JobStatus = "running"
	JobCompleted JobStatus = "completed"
	JobFailed    JobStatus = "failed"
	JobCancelled JobStatus = "cancelled"
	JobUnknown   JobStatus = "unknown"
	// JobPaused is Herd's: a job paused (POST /jobs/v2/{id}/pause) starts
	// no device until it is resumed; its deadline still runs.
	JobPaused JobStatus = "paused"
)

// Terminal reports whether a job in status s will not change any more.
func (s JobStatus) Terminal() bool {
	return s == JobCompleted || s == JobFailed || s == JobCancelled
}

// DeviceJobStatus is the status of one device within a job.
type DeviceJobStatus string

// Device job statuses.
const (
	DeviceJobPending   DeviceJobStatus = "pending"
	DeviceJobScheduled DeviceJobStatus = "scheduled"
	DeviceJobRunning   DeviceJobStatus = "running"
	DeviceJobCompleted DeviceJobStatus = "completed"
	DeviceJobFailed    DeviceJobStatus = "failed"
	DeviceJobCanceled  DeviceJobStatus = "canceled"
)

// Job is a v2 job: a request (as PUT to /jobs/v2/{id}) and its progress (as
// returned by GET).
type Job struct {
	JobID                     string               `json:"jobId"`
	Type                      JobType              `json:"type"`
	Status                    JobStatus            `json:"status,omitempty"`
	QueryCondition            string               `json:"queryCondition,omitempty"`
	CreatedTime               *Time                `json:"createdTime,omitempty"`
	StartTime                 *Time                `json:"startTime,omitempty"`
	EndTime                   *Time                `json:"endTime,omitempty"`
	MaxExecutionTimeInSeconds int64                `json:"maxExecutionTimeInSeconds,omitempty"`
	CloudToDeviceMethod       *MethodRequest       `json:"cloudToDeviceMethod,omitempty"`
	UpdateTwin                *TwinPatch           `json:"updateTwin,omitempty"`
	FailureReason             string               `json:"failureReason,omitempty"`
	StatusMessage             string               `json:"statusMessage,omitempty"`
	DeviceJobStatistics       *DeviceJobStatistics `json:"deviceJobStatistics,omitempty"`
	// Herd is Herd's extension member (ignored by the Azure SDKs): how the
	// job rolls out and when it aborts.
	Herd *JobOptions `json:"herd,omitempty"`
	// HerdStatus is where a job with waves is in its rollout (Herd's; set
	// by the hub, ignored in a request).
	HerdStatus *JobHerdStatus `json:"herdStatus,omitempty"`
}

// JobPreview is what a job would do if it were created now (POST
// /jobs/v2/preview): the devices its condition selects, a sample of them,
// and an estimate of how long it would run. Nothing is stored.
type JobPreview struct {
	JobID                     string  `json:"jobId,omitempty"`
	Type                      JobType `json:"type"`
	QueryCondition            string  `json:"queryCondition"`
	StartTime                 *Time   `json:"startTime"`
	MaxExecutionTimeInSeconds int64   `json:"maxExecutionTimeInSeconds"`
	// DeviceCount is how many devices the condition selects now;
	// ConnectedCount and DisconnectedCount split it by connection state.
	DeviceCount       int64 `json:"deviceCount"`
	ConnectedCount    int64 `json:"connectedCount"`
	DisconnectedCount int64 `json:"disconnectedCount"`
	// SampleDeviceIDs are the first devices selected, in id order.
	SampleDeviceIDs []string `json:"sampleDeviceIds"`
	// EstimatedDurationInSeconds is how long the job should run once
	// started when devices answer at once; MaxDurationInSeconds how long
	// it may run at worst (every device using its whole timeouts), never
	// more than the deadline. Both are estimates (Estimate says how they
	// were made), not promises: other jobs share the engine's capacity.
	EstimatedDurationInSeconds float64 `json:"estimatedDurationInSeconds"`
	MaxDurationInSeconds       float64 `json:"maxDurationInSeconds"`
	EstimatedEndTime           Time    `json:"estimatedEndTime"`
	Estimate                   string  `json:"estimate"`
}

// JobHerdStatus is the rollout state of a job with waves: Wave is the
// wave its devices are started from (1-based) of Waves.
type JobHerdStatus struct {
	Wave  int `json:"wave"`
	Waves int `json:"waves"`
}

// JobOptions is the "herd" member of a job: rollout controls that Azure
// IoT Hub does not have (docs/jobs.md, "Rollouts").
type JobOptions struct {
	Rollout *Rollout     `json:"rollout,omitempty"`
	Abort   *AbortPolicy `json:"abort,omitempty"`
	Retry   *RetryPolicy `json:"retry,omitempty"`
	// Continuous keeps the job running until its deadline (or a cancel):
	// a device that starts matching the queryCondition after the job
	// started (created, tagged, changed) is targeted too, once. A
	// continuous job ends completed at its deadline.
	Continuous bool `json:"continuous,omitempty"`
}

// RetryPolicy calls a method job's devices again after failures of the
// listed types: a failed attempt whose type a criterion names, while the
// device has made fewer than its MaxAttempts attempts, goes back to
// pending and is started again BackoffSeconds × BackoffFactor^(n−1)
// seconds after its n-th attempt ended (at most MaxRetryDelaySeconds).
// Only the last attempt's outcome counts as the device's.
//
// A zero BackoffSeconds or BackoffFactor is left out, and the hub uses its
// default (30 seconds, 2).
type RetryPolicy struct {
	Criteria       []RetryCriterion `json:"criteria"`
	BackoffSeconds float64          `json:"backoffSeconds,omitempty"`
	BackoffFactor  float64          `json:"backoffFactor,omitempty"`
}

// RetryCriterion retries failures of FailureType until a device has made
// MaxAttempts attempts (the first call counts as one). The first criterion
// that names a failure's type (Any names every type) decides.
type RetryCriterion struct {
	FailureType FailureType `json:"failureType"`
	MaxAttempts int         `json:"maxAttempts"`
}

// MaxRetryDelaySeconds bounds the wait before one retry, whatever the
// backoff grows to.
const MaxRetryDelaySeconds = 3600

// Rollout paces a job: how many devices it starts per minute, fixed
// (MaxPerMinute) or ramping up (Exponential, capped by MaxPerMinute when
// both are set).
type Rollout struct {
	MaxPerMinute int64            `json:"maxPerMinute,omitempty"`
	Exponential  *ExponentialRate `json:"exponential,omitempty"`
	// Waves split the job's devices: each wave starts once the devices of
	// the one before have finished; Percent is cumulative (of the job's
	// devices), and the last wave takes the rest.
	Waves []Wave `json:"waves,omitempty"`
	// PauseBetweenWaves pauses the job after each wave (status paused)
	// until it is resumed.
	PauseBetweenWaves bool `json:"pauseBetweenWaves,omitempty"`
}

// Wave is one wave of a rollout: the share of the job's devices started by
// its end.
type Wave struct {
	Percent float64 `json:"percent"`
}

// ExponentialRate starts a job at BaseRatePerMinute devices a minute and
// multiplies the rate by IncrementFactor each time
// RateIncreaseCriteria.NumberOfSucceededDevices more devices succeed.
type ExponentialRate struct {
	BaseRatePerMinute    int64                `json:"baseRatePerMinute"`
	IncrementFactor      float64              `json:"incrementFactor"`
	RateIncreaseCriteria RateIncreaseCriteria `json:"rateIncreaseCriteria"`
}

// RateIncreaseCriteria says when an exponential rollout speeds up.
type RateIncreaseCriteria struct {
	NumberOfSucceededDevices int64 `json:"numberOfSucceededDevices"`
}

// AbortPolicy stops a job whose devices fail too often: the first
// criterion met cancels the pending devices and fails the job.
type AbortPolicy struct {
	Criteria []AbortCriterion `json:"criteria"`
}

// AbortCriterion fires once at least MinExecutedDevices devices have an
// outcome and ThresholdPercentage percent or more of them failed with
// FailureType.
type AbortCriterion struct {
	FailureType         FailureType `json:"failureType"`
	ThresholdPercentage float64     `json:"thresholdPercentage"`
	MinExecutedDevices  int64       `json:"minExecutedDevices"`
}

// FailureType classifies a device's failure for abort criteria.
type FailureType string

// Failure types.
const (
	// FailureFailed: a method answered with a status of 400 or more, or
	// the device failed otherwise (a twin write refused, the device
	// deleted, a call interrupted by a restart).
	FailureFailed FailureType = "Failed"
	// FailureTimedOut: the device did not answer within
	// responseTimeoutInSeconds (GatewayTimeout).
	FailureTimedOut FailureType = "TimedOut"
	// FailureNotOnline: the device was not online (DeviceNotOnline): the
	// request never reached its connection, so a retry of this type never
	// runs a method twice.
	FailureNotOnline FailureType = "DeviceNotOnline"
	// FailureAny: any of the above.
	FailureAny FailureType = "Any"
)

// DeviceJobStatistics counts a job's devices by outcome. DeviceCount is the
// sum of the other four.
type DeviceJobStatistics struct {
	DeviceCount    int64 `json:"deviceCount"`
	FailedCount    int64 `json:"failedCount"`
	SucceededCount int64 `json:"succeededCount"`
	RunningCount   int64 `json:"runningCount"`
	PendingCount   int64 `json:"pendingCount"`
}

// DeviceJob is the record of one device in one job, as returned by
// SELECT * FROM devices.jobs.
type DeviceJob struct {
	DeviceID               string            `json:"deviceId"`
	JobID                  string            `json:"jobId"`
	JobType                JobType           `json:"jobType"`
	Status                 DeviceJobStatus   `json:"status"`
	StartTimeUTC           Time              `json:"startTimeUtc"`
	EndTimeUTC             Time              `json:"endTimeUtc"`
	CreatedDateTimeUTC     Time              `json:"createdDateTimeUtc"`
	LastUpdatedDateTimeUTC Time              `json:"lastUpdatedDateTimeUtc"`
	Outcome                *DeviceJobOutcome `json:"outcome,omitempty"`
	Error                  *DeviceJobError   `json:"error,omitempty"`
	// Attempts is how many times the device was started: a method called
	// or found offline, a twin written (Herd's addition; more than one
	// only under a retry policy, herd.retry).
	Attempts int64 `json:"attempts"`
}

// DeviceJobOutcome is what a device job produced.
type DeviceJobOutcome struct {
	DeviceMethodResponse *MethodResult `json:"deviceMethodResponse"`
}

// DeviceJobError says why a device job failed.
type DeviceJobError struct {
	Code        string `json:"code"`
	Description string `json:"description"`
}

// ImportDevice is one entry of a bulk registry request (POST /devices):
// the device, what to do with it, and optionally its initial twin.
type ImportDevice struct {
	ID             string           `json:"id"`
	ModuleID       string           `json:"moduleId,omitempty"`
	ETag           string           `json:"eTag,omitempty"`
	ImportMode     string           `json:"importMode"`
	Status         DeviceStatus     `json:"status,omitempty"`
	StatusReason   *string          `json:"statusReason,omitempty"`
	Authentication *Authentication  `json:"authentication,omitempty"`
	TwinETag       string           `json:"twinETag,omitempty"`
	Tags           map[string]any   `json:"tags,omitempty"`
	Properties     *PatchProperties `json:"properties,omitempty"`
	Capabilities   *Capabilities    `json:"capabilities,omitempty"`
	DeviceScope    string           `json:"deviceScope,omitempty"`
	ParentScopes   []string         `json:"parentScopes,omitempty"`
}

// Bulk import modes (matched case-insensitively).
const (
	ImportCreate                    = "create"
	ImportUpdate                    = "update"
	ImportUpdateIfMatchETag         = "updateIfMatchETag"
	ImportCreateOrUpdate            = "createOrUpdate"
	ImportCreateOrUpdateIfMatchETag = "createOrUpdateIfMatchETag"
	ImportDelete                    = "delete"
	ImportDeleteIfMatchETag         = "deleteIfMatchETag"
)

// BulkResult is the reply to a bulk registry request.
type BulkResult struct {
	IsSuccessful bool          `json:"isSuccessful"`
	Errors       []BulkError   `json:"errors"`
	Warnings     []BulkWarning `json:"warnings"`
}

// BulkError says why one device of a bulk request failed.
type BulkError struct {
	DeviceID    string `json:"deviceId"`
	ModuleID    string `json:"moduleId,omitempty"`
	ErrorCode   string `json:"errorCode"`
	ErrorStatus string `json:"errorStatus"`
	Operation   string `json:"operation,omitempty"`
}

// BulkWarning is a non-fatal remark about one device of a bulk request.
type BulkWarning struct {
	DeviceID      string `json:"deviceId"`
	WarningCode   string `json:"warningCode"`
	WarningStatus string `json:"warningStatus"`
}
