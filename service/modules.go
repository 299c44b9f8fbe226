package service

import (
	"context"
	"net/http"
	"net/url"

	"github.com/herd-iot/herd"
)

func modulePath(deviceID, moduleID string) string {
	return devicePath(deviceID) + "/modules/" + url.PathEscape(moduleID)
}

// CreateModule registers a module of an existing device. Leave the
// symmetric keys empty to have the hub generate them; the returned module
// carries them.
func (c *Client) CreateModule(ctx context.Context, m herd.Module) (*herd.Module, error) {
	var out herd.Module
	if _, err := c.do(ctx, request{method: http.MethodPut, path: modulePath(m.DeviceID, m.ModuleID), body: m, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetModule returns a module of a device.
func (c *Client) GetModule(ctx context.Context, deviceID, moduleID string) (*herd.Module, error) {
	var out herd.Module
	if _, err := c.do(ctx, request{method: http.MethodGet, path: modulePath(deviceID, moduleID), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListModules returns a device's modules in id order.
func (c *Client) ListModules(ctx context.Context, deviceID string) ([]herd.Module, error) {
	var out []herd.Module
	if _, err := c.do(ctx, request{method: http.MethodGet, path: devicePath(deviceID) + "/modules", out: &out}); err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateModule replaces a module's writable fields (authentication,
// managedBy). etag "" or "*" updates unconditionally; otherwise the update
// fails with ErrPreconditionFailed if the module changed since.
func (c *Client) UpdateModule(ctx context.Context, m herd.Module, etag string) (*herd.Module, error) {
	var out herd.Module
	_, err := c.do(ctx, request{method: http.MethodPut, path: modulePath(m.DeviceID, m.ModuleID), header: ifMatch(etag), body: m, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteModule removes a module and its twin; etag as in UpdateModule.
func (c *Client) DeleteModule(ctx context.Context, deviceID, moduleID, etag string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: modulePath(deviceID, moduleID), header: ifMatch(etag)})
	return err
}
