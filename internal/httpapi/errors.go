package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// azureCode is how one herd error code appears over HTTP.
type azureCode struct {
	status int
	number int
}

// codes maps every herd.ErrorCode to its HTTP status and Azure number
// (§3.4 of the compatibility reference). This is the only such table.
var codes = map[herd.ErrorCode]azureCode{
	herd.ErrGenericBadRequest:            {http.StatusBadRequest, 400000},
	herd.ErrInvalidProtocolVersion:       {http.StatusBadRequest, 400001},
	herd.ErrArgumentInvalid:              {http.StatusBadRequest, 400004},
	herd.ErrArgumentNull:                 {http.StatusBadRequest, 400005},
	herd.ErrIotHubFormatError:            {http.StatusBadRequest, 400006},
	herd.ErrDeviceDefinedMultipleTimes:   {http.StatusBadRequest, 400011},
	herd.ErrBulkRegistryOperationFailure: {http.StatusBadRequest, 400013},
	herd.ErrUnauthorized:                 {http.StatusUnauthorized, 401002},
	herd.ErrDeviceNotFound:               {http.StatusNotFound, 404001},
	herd.ErrJobNotFound:                  {http.StatusNotFound, 404002},
	herd.ErrConfigurationNotFound:        {http.StatusNotFound, 404000},
	herd.ErrModuleNotFound:               {http.StatusNotFound, 404010},
	herd.ErrDeviceNotOnline:              {http.StatusNotFound, 404103},
	herd.ErrNotFound:                     {http.StatusNotFound, 404000},
	herd.ErrMethodNotAllowed:             {http.StatusMethodNotAllowed, 405000},
	herd.ErrDeviceAlreadyExists:          {http.StatusConflict, 409001},
	herd.ErrModuleAlreadyExists:          {http.StatusConflict, 409301},
	herd.ErrJobAlreadyExists:             {http.StatusConflict, 409104},
	herd.ErrConfigurationAlreadyExists:   {http.StatusConflict, 409000},
	herd.ErrTooManyConfigurations:        {http.StatusConflict, 409000},
	herd.ErrPreconditionFailed:           {http.StatusPreconditionFailed, 412001},
	herd.ErrMessageTooLarge:              {http.StatusRequestEntityTooLarge, 413001},
	herd.ErrTooManyDevices:               {http.StatusRequestEntityTooLarge, 413002},
	herd.ErrThrottling:                   {http.StatusTooManyRequests, 429001},
	herd.ErrInternal:                     {http.StatusInternalServerError, 500001},
	herd.ErrServiceUnavailable:           {http.StatusServiceUnavailable, 503001},
	herd.ErrGatewayTimeout:               {http.StatusGatewayTimeout, 504101},
}

// errorBody is Azure's error document.
type errorBody struct {
	Message          string `json:"Message"`
	ExceptionMessage string `json:"ExceptionMessage"`
}

func trackingID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeError answers with the Azure error format: the status, the
// iothub-errorcode header and {"Message":"ErrorCode:<Name>;<text>",
// "ExceptionMessage":"Tracking ID:…"}. Direct-method failures
// (DeviceNotOnline, GatewayTimeout) use Azure's nested form, whose Message
// is itself a JSON document with the numeric code.
func writeError(w http.ResponseWriter, err error, now time.Time) {
	code := herd.ErrorCodeOf(err)
	ac, ok := codes[code]
	if !ok {
		code, ac = herd.ErrInternal, codes[herd.ErrInternal]
	}
	msg := herd.ErrorMessage(err)
	if msg == "" {
		msg = string(code)
	}
	tid := trackingID()
	var body errorBody
	switch code {
	case herd.ErrDeviceNotOnline, herd.ErrGatewayTimeout:
		info := map[string]any{}
		if code == herd.ErrDeviceNotOnline {
			if e, ok := err.(interface{ Timeout() time.Duration }); ok {
				info["timeout"] = formatTimeSpan(e.Timeout())
			}
		}
		nested, _ := json.Marshal(map[string]any{
			"errorCode": ac.number, "trackingId": tid, "message": msg,
			"info": info, "timestampUtc": herd.NewTime(now).String(),
		})
		body = errorBody{Message: string(nested), ExceptionMessage: ""}
	default:
		body = errorBody{
			Message: fmt.Sprintf("ErrorCode:%s;%s", code, legacyText(msg)),
			ExceptionMessage: fmt.Sprintf("Tracking ID:%s-G:0-TimeStamp:%s", tid,
				now.UTC().Format("01/02/2006 15:04:05")),
		}
	}
	w.Header().Set("iothub-errorcode", string(code))
	writeJSON(w, ac.status, body)
}

// legacyText makes msg safe for the legacy "ErrorCode:<Name>;<text>" form:
// the Node SDK splits Message on ";" and keeps only the second part
// (common-http parseErrorBody, §3.4), so a ";" inside the text would cut
// the rest of it off. It becomes ",".
func legacyText(msg string) string {
	return strings.ReplaceAll(msg, ";", ",")
}

// formatTimeSpan writes a duration as .NET does: hh:mm:ss.
func formatTimeSpan(d time.Duration) string {
	s := int64(d / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
}

// writeJSON writes v as the JSON reply.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"Message":"ErrorCode:ServerError;the reply could not be encoded","ExceptionMessage":""}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
