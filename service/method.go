package service

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

// InvokeMethod calls a direct method on a device and returns the device's
// answer. Zero timeouts take the hub's defaults (30 s to answer; the device
// must be online already). It fails with ErrDeviceNotFound,
// ErrDeviceNotOnline (not connected and subscribed to methods within
// ConnectTimeoutInSeconds) or ErrGatewayTimeout (no answer within
// ResponseTimeoutInSeconds).
func (c *Client) InvokeMethod(ctx context.Context, deviceID string, req herd.MethodRequest) (*herd.MethodResult, error) {
	if req.Payload == nil {
		req.Payload = []byte("null")
	}
	var out herd.MethodResult
	_, err := c.do(ctx, request{
		method: http.MethodPost, path: twinPath(deviceID) + "/methods", body: req, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// InvokeModuleMethod calls a direct method on a module of a device
// (POST /twins/{id}/modules/{mid}/methods), as InvokeMethod does on a
// device; an unknown module fails with ErrModuleNotFound.
func (c *Client) InvokeModuleMethod(ctx context.Context, deviceID, moduleID string, req herd.MethodRequest) (*herd.MethodResult, error) {
	if req.Payload == nil {
		req.Payload = []byte("null")
	}
	var out herd.MethodResult
	_, err := c.do(ctx, request{
		method: http.MethodPost, path: moduleTwinPath(deviceID, moduleID) + "/methods", body: req, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
