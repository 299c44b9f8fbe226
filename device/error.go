package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd"
)

// Error is the error type of twin requests the hub refuses.
//
// Deprecated: twin requests fail with *herd.Error, of which this is an
// alias: use herd.Error and herd.IsCode. The hub's status is in Status;
// Azure's six-digit number (the old ErrorCode field) is mapped to Code.
type Error = herd.Error

// azureCodes maps the six-digit numbers of Azure's error catalogue (§3.4
// of the compatibility reference) back to herd codes: what a twin error
// response carries in its body, {"errorCode":400004,"message":"…"} (§8.7).
var azureCodes = map[int]herd.ErrorCode{
	400000: herd.ErrGenericBadRequest,
	400001: herd.ErrInvalidProtocolVersion,
	400004: herd.ErrArgumentInvalid,
	400005: herd.ErrArgumentNull,
	400006: herd.ErrIotHubFormatError,
	400011: herd.ErrDeviceDefinedMultipleTimes,
	400013: herd.ErrBulkRegistryOperationFailure,
	401002: herd.ErrUnauthorized,
	404000: herd.ErrNotFound,
	404001: herd.ErrDeviceNotFound,
	404002: herd.ErrJobNotFound,
	404010: herd.ErrModuleNotFound,
	404103: herd.ErrDeviceNotOnline,
	405000: herd.ErrMethodNotAllowed,
	409001: herd.ErrDeviceAlreadyExists,
	409301: herd.ErrModuleAlreadyExists,
	409104: herd.ErrJobAlreadyExists,
	412001: herd.ErrPreconditionFailed,
	413001: herd.ErrMessageTooLarge,
	413002: herd.ErrTooManyDevices,
	429001: herd.ErrThrottling,
	500001: herd.ErrInternal,
	503001: herd.ErrServiceUnavailable,
	504101: herd.ErrGatewayTimeout,
}

// codeOf returns the herd code of a twin error response: from Azure's
// number when it is one herd knows, otherwise from the status, as the
// service SDK does for an HTTP reply without an error name.
func codeOf(status, number int) herd.ErrorCode {
	if code, ok := azureCodes[number]; ok {
		return code
	}
	switch status {
	case 400:
		return herd.ErrArgumentInvalid
	case 401, 403:
		return herd.ErrUnauthorized
	case 404:
		return herd.ErrNotFound
	case 409:
		return herd.ErrDeviceAlreadyExists
	case 412:
		return herd.ErrPreconditionFailed
	case 413:
		return herd.ErrMessageTooLarge
	case 429:
		return herd.ErrThrottling
	case 503:
		return herd.ErrServiceUnavailable
	case 504:
		return herd.ErrGatewayTimeout
	}
	return herd.ErrInternal
}

// twinError is the *herd.Error of a twin response with status ≥ 300.
func twinError(status int, body []byte) *herd.Error {
	var b struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	_ = json.Unmarshal(body, &b)
	msg := b.Message
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	if msg == "" {
		msg = fmt.Sprintf("twin request failed with status %d", status)
	}
	return &herd.Error{Code: codeOf(status, b.ErrorCode), Message: msg, Status: status}
}

// connectError wraps a failed connection attempt. A CONNACK refusal is the
// hub's answer, so it also carries a *herd.Error: bad credentials (return
// codes 4 and 5, §8.9) are ErrUnauthorized, "server unavailable" (3) is
// ErrServiceUnavailable. paho's error stays in the chain for errors.Is.
func connectError(deviceID string, err error) error {
	var code herd.ErrorCode
	switch {
	case errors.Is(err, packets.ErrorRefusedNotAuthorised), errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		code = herd.ErrUnauthorized
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		code = herd.ErrServiceUnavailable
	default:
		return fmt.Errorf("device: connect %s: %w", deviceID, err)
	}
	he := herd.Errorf(code, "the hub refused the connection")
	return fmt.Errorf("device: connect %s: %w (%w)", deviceID, he, err)
}
