package httpapi

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

// The Node SDK splits an error's Message on ";" and keeps only the second
// part, so the text after "ErrorCode:<Name>;" must not contain another ";"
// (found by compat/node: a registryRead refusal lost "this operation needs
// RegistryWrite").
func TestWriteErrorLegacyTextHasNoSemicolon(t *testing.T) {
	rec := httptest.NewRecorder()
	err := herd.Errorf(herd.ErrUnauthorized, `policy "registryRead" has RegistryRead; this operation needs RegistryWrite`)
	writeError(rec, err, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if rec.Code != 401 {
		t.Fatalf("status %d, want 401", rec.Code)
	}
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	parts := strings.Split(body.Message, ";")
	want := []string{"ErrorCode:IotHubUnauthorizedAccess", `policy "registryRead" has RegistryRead, this operation needs RegistryWrite`}
	if len(parts) != 2 || parts[0] != want[0] || parts[1] != want[1] {
		t.Fatalf("Message %q splits on \";\" into %q, want %q", body.Message, parts, want)
	}
}
