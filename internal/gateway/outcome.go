package gateway

import (
	"encoding/json"

	"github.com/herd-iot/herd"
)

// mqttOutcome maps a herd error code to the status and Azure number of a
// twin error response on $iothub/twin/res/{status}/ (§8.7). This is the
// gateway's one such table.
func mqttOutcome(code herd.ErrorCode) (status, number int) {
	switch code {
	case herd.ErrArgumentInvalid:
		return 400, 400004
	case herd.ErrArgumentNull:
		return 400, 400005
	case herd.ErrIotHubFormatError:
		return 400, 400006
	case herd.ErrGenericBadRequest:
		return 400, 400000
	case herd.ErrDeviceNotFound:
		return 404, 404001
	case herd.ErrPreconditionFailed:
		return 412, 412001
	case herd.ErrMessageTooLarge:
		return 413, 413001
	case herd.ErrThrottling:
		return 429, 429001
	case herd.ErrServiceUnavailable:
		return 503, 503001
	}
	return 500, 500001
}

// errorBody is the JSON of a twin error response.
func errorBody(number int, message string) []byte {
	b, _ := json.Marshal(struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}{number, message})
	return b
}
