package httpapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/method"
)

// Invoker invokes direct methods (internal/method.Service).
type Invoker interface {
	Invoke(ctx context.Context, deviceID string, req herd.MethodRequest, opts ...method.Option) (*herd.MethodResult, error)
}

// methodBody is the body of POST /twins/{id}/methods (§5.1). The timeouts
// are pointers to tell an absent value from 0; timeoutInSeconds is the
// older clients' name for responseTimeoutInSeconds.
type methodBody struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload"`
	ResponseTimeoutInSeconds *int            `json:"responseTimeoutInSeconds"`
	TimeoutInSeconds         *int            `json:"timeoutInSeconds"`
	ConnectTimeoutInSeconds  *int            `json:"connectTimeoutInSeconds"`
}

// HandleMethods registers POST /twins/{id}/methods and, for modules,
// POST /twins/{id}/modules/{mid}/methods (ServiceConnect).
func (s *Server) HandleMethods(inv Invoker) {
	s.Handle("/twins/{id}/methods", map[string]Endpoint{
		http.MethodPost: {auth.ServiceConnect, func(w http.ResponseWriter, r *http.Request) error {
			return s.invokeMethod(w, r, inv, r.PathValue("id"))
		}},
	})
	s.Handle("/twins/{id}/modules/{mid}/methods", map[string]Endpoint{
		http.MethodPost: {auth.ServiceConnect, func(w http.ResponseWriter, r *http.Request) error {
			if err := checkModulePath(r); err != nil {
				return err
			}
			return s.invokeMethod(w, r, inv, herd.ModuleIdentity(r.PathValue("id"), r.PathValue("mid")))
		}},
	})
}

// invokeMethod validates the call to target (a device id, or a module's
// identity, herd.ModuleIdentity) (400 ArgumentInvalid/ArgumentNull for
// bad fields; 413 MessageTooLarge for a payload over 128 KB) and answers
// 200 {status, payload}, 404 DeviceNotFound or DeviceNotOnline (404103),
// or 504 GatewayTimeout (504101).
func (s *Server) invokeMethod(w http.ResponseWriter, r *http.Request, inv Invoker, target string) error {
	var b methodBody
	if err := decodeBody(r, maxBody, &b); err != nil {
		return err
	}
	req := herd.MethodRequest{MethodName: b.MethodName, Payload: b.Payload}
	switch {
	case b.ResponseTimeoutInSeconds != nil:
		req.ResponseTimeoutInSeconds = *b.ResponseTimeoutInSeconds
	case b.TimeoutInSeconds != nil:
		req.ResponseTimeoutInSeconds = *b.TimeoutInSeconds
	}
	if b.ConnectTimeoutInSeconds != nil {
		req.ConnectTimeoutInSeconds = *b.ConnectTimeoutInSeconds
	}
	if err := method.Validate(&req); err != nil {
		return err
	}
	res, err := inv.Invoke(r.Context(), target, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
