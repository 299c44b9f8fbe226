package device

import (
	"testing"

	"github.com/herd-iot/herd"
)

// A twin error response becomes a *herd.Error: the code from Azure's
// number when herd knows it, otherwise from the status; the status kept.
func TestTwinError(t *testing.T) {
	tests := []struct {
		status int
		body   string
		code   herd.ErrorCode
		msg    string
	}{
		{400, `{"errorCode":400004,"message":"bad key"}`, herd.ErrArgumentInvalid, "bad key"},
		{400, `{"errorCode":400006,"message":"not JSON"}`, herd.ErrIotHubFormatError, "not JSON"},
		{404, `{"errorCode":404001,"message":"dev1"}`, herd.ErrDeviceNotFound, "dev1"},
		{412, `{"errorCode":412001,"message":"stale"}`, herd.ErrPreconditionFailed, "stale"},
		{413, `{"errorCode":413001,"message":"big"}`, herd.ErrMessageTooLarge, "big"},
		{429, `{"errorCode":429002,"message":"backlog"}`, herd.ErrThrottling, "backlog"}, // not herd's: by status
		{500, `{"errorCode":500001,"message":"oops"}`, herd.ErrInternal, "oops"},
		{503, ``, herd.ErrServiceUnavailable, "twin request failed with status 503"},
		{502, `bad gateway`, herd.ErrInternal, "bad gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			e := twinError(tt.status, []byte(tt.body))
			if e.Code != tt.code || e.Status != tt.status || e.Message != tt.msg {
				t.Fatalf("got %#v, want %s %d %q", e, tt.code, tt.status, tt.msg)
			}
			if !herd.IsCode(e, tt.code) {
				t.Fatalf("IsCode(%v, %s) is false", e, tt.code)
			}
		})
	}
}
