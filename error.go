package herd

import (
	"errors"
	"fmt"
)

// ErrorCode is a stable, machine-readable error code. The values are the
// error names Azure IoT Hub uses (ErrorCode:<Name> in REST error bodies), so
// that a code means the same thing in the server, the Go SDKs and in the
// Azure SDKs' error handling. internal/httpapi maps each code once to an HTTP
// status and Azure's six-digit number; the gateway maps them to MQTT outcomes;
// the service SDK maps HTTP responses back.
type ErrorCode string

// Error codes. Every code a caller can see is listed here.
const (
	ErrGenericBadRequest            ErrorCode = "GenericBadRequest"
	ErrInvalidProtocolVersion       ErrorCode = "InvalidProtocolVersion"
	ErrArgumentInvalid              ErrorCode = "ArgumentInvalid"
	ErrArgumentNull                 ErrorCode = "ArgumentNull"
	ErrIotHubFormatError            ErrorCode = "IotHubFormatError"
	ErrDeviceDefinedMultipleTimes   ErrorCode = "DeviceDefinedMultipleTimes"
	ErrBulkRegistryOperationFailure ErrorCode = "BulkRegistryOperationFailure"
	ErrUnauthorized                 ErrorCode = "IotHubUnauthorizedAccess"
	ErrDeviceNotFound               ErrorCode = "DeviceNotFound"
	ErrJobNotFound                  ErrorCode = "JobNotFound"
	ErrConfigurationNotFound        ErrorCode = "ConfigurationNotFound"
	ErrModuleNotFound               ErrorCode = "ModuleNotFound"
	ErrDeviceNotOnline              ErrorCode = "DeviceNotOnline"
	ErrNotFound                     ErrorCode = "NotFound"
	ErrMethodNotAllowed             ErrorCode = "MethodNotAllowed"
	ErrDeviceAlreadyExists          ErrorCode = "DeviceAlreadyExists"
	ErrModuleAlreadyExists          ErrorCode = "ModuleAlreadyExistsOnDevice"
	ErrJobAlreadyExists             ErrorCode = "JobAlreadyExists"
	ErrConfigurationAlreadyExists   ErrorCode = "ConfigurationAlreadyExists"
	ErrTooManyConfigurations        ErrorCode = "TooManyConfigurationsOnHub"
	ErrPreconditionFailed           ErrorCode = "PreconditionFailed"
	ErrMessageTooLarge              ErrorCode = "MessageTooLarge"
	ErrTooManyDevices               ErrorCode = "TooManyDevices"
	ErrThrottling                   ErrorCode = "ThrottlingException"
	ErrInternal                     ErrorCode = "ServerError"
	ErrServiceUnavailable           ErrorCode = "ServiceUnavailable"
	ErrGatewayTimeout               ErrorCode = "GatewayTimeout"
)

// Error is the one error type that crosses package boundaries with a code.
// Message is safe to show to the caller; it never holds secrets.
type Error struct {
	Code    ErrorCode
	Message string
	// Status is the status a client SDK received with the error: the HTTP
	// status in the service SDK, the {status} of a twin response
	// ($iothub/twin/res/{status}/) in the device SDK. It is 0 in errors
	// the server makes: there httpapi and the gateway derive the status
	// from Code, and never read this field.
	Status int
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCodeOf returns the code of the first *Error in err's chain, "" for a
// nil error and ErrInternal for any other error.
func ErrorCodeOf(err error) ErrorCode {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ErrInternal
}

// ErrorMessage returns the caller-safe message of the first *Error in err's
// chain, and a fixed text for any other error (whose detail may leak
// internals and belongs in the log instead).
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "An internal error occurred."
}

// IsCode reports whether err carries the given code.
func IsCode(err error, code ErrorCode) bool {
	return err != nil && ErrorCodeOf(err) == code
}
