package service

import (
	"context"
	"net/http"
	"net/url"

	"github.com/herd-iot/herd"
)

func twinPath(id string) string { return "/twins/" + url.PathEscape(id) }

// GetTwin returns a device's twin.
func (c *Client) GetTwin(ctx context.Context, id string) (*herd.Twin, error) {
	var out herd.Twin
	if _, err := c.do(ctx, request{method: http.MethodGet, path: twinPath(id), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateTwin merges patch into the twin's tags and desired properties (a
// nil value deletes a key) and returns the updated twin. etag "" or "*"
// writes unconditionally; otherwise the write fails with
// ErrPreconditionFailed if the twin changed since.
func (c *Client) UpdateTwin(ctx context.Context, id string, patch herd.TwinPatch, etag string) (*herd.Twin, error) {
	return c.writeTwin(ctx, http.MethodPatch, id, patch, etag)
}

// ReplaceTwin replaces the twin's tags and desired properties.
func (c *Client) ReplaceTwin(ctx context.Context, id string, patch herd.TwinPatch, etag string) (*herd.Twin, error) {
	return c.writeTwin(ctx, http.MethodPut, id, patch, etag)
}

// GetModuleTwin returns a module's twin.
func (c *Client) GetModuleTwin(ctx context.Context, deviceID, moduleID string) (*herd.Twin, error) {
	var out herd.Twin
	if _, err := c.do(ctx, request{method: http.MethodGet, path: moduleTwinPath(deviceID, moduleID), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateModuleTwin merges patch into a module twin's tags and desired
// properties; etag as in UpdateTwin.
func (c *Client) UpdateModuleTwin(ctx context.Context, deviceID, moduleID string, patch herd.TwinPatch, etag string) (*herd.Twin, error) {
	return c.writeTwinAt(ctx, http.MethodPatch, moduleTwinPath(deviceID, moduleID), patch, etag)
}

// ReplaceModuleTwin replaces a module twin's tags and desired properties.
func (c *Client) ReplaceModuleTwin(ctx context.Context, deviceID, moduleID string, patch herd.TwinPatch, etag string) (*herd.Twin, error) {
	return c.writeTwinAt(ctx, http.MethodPut, moduleTwinPath(deviceID, moduleID), patch, etag)
}

func moduleTwinPath(deviceID, moduleID string) string {
	return twinPath(deviceID) + "/modules/" + url.PathEscape(moduleID)
}

func (c *Client) writeTwin(ctx context.Context, method, id string, patch herd.TwinPatch, etag string) (*herd.Twin, error) {
	return c.writeTwinAt(ctx, method, twinPath(id), patch, etag)
}

func (c *Client) writeTwinAt(ctx context.Context, method, path string, patch herd.TwinPatch, etag string) (*herd.Twin, error) {
	patch.ETag = ""
	var out herd.Twin
	_, err := c.do(ctx, request{method: method, path: path, header: ifMatch(etag), body: patch, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
