package service

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/herd-iot/herd"
)

func devicePath(id string) string { return "/devices/" + url.PathEscape(id) }

// CreateDevice registers a device. Leave the symmetric keys empty to have
// the hub generate them; the returned device carries them.
func (c *Client) CreateDevice(ctx context.Context, d herd.Device) (*herd.Device, error) {
	var out herd.Device
	_, err := c.do(ctx, request{method: http.MethodPut, path: devicePath(d.DeviceID), body: d, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetDevice returns a device.
func (c *Client) GetDevice(ctx context.Context, id string) (*herd.Device, error) {
	var out herd.Device
	if _, err := c.do(ctx, request{method: http.MethodGet, path: devicePath(id), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateDevice replaces a device's writable fields (status, keys,
// capabilities). etag "" or "*" updates unconditionally; otherwise the
// update fails with ErrPreconditionFailed if the device changed since.
func (c *Client) UpdateDevice(ctx context.Context, d herd.Device, etag string) (*herd.Device, error) {
	var out herd.Device
	_, err := c.do(ctx, request{method: http.MethodPut, path: devicePath(d.DeviceID), header: ifMatch(etag), body: d, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteDevice removes a device and its twin; etag as in UpdateDevice.
func (c *Client) DeleteDevice(ctx context.Context, id, etag string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: devicePath(id), header: ifMatch(etag)})
	return err
}

// ListDevices returns up to top devices (at most 1000) in id order.
func (c *Client) ListDevices(ctx context.Context, top int) ([]herd.Device, error) {
	var out []herd.Device
	q := url.Values{}
	if top > 0 {
		q.Set("top", strconv.Itoa(top))
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/devices", query: q, out: &out}); err != nil {
		return nil, err
	}
	return out, nil
}

// BulkDevices creates, updates or deletes up to 100 devices in one request.
// Per-device failures are in the result (IsSuccessful false), not in err.
func (c *Client) BulkDevices(ctx context.Context, devices []herd.ImportDevice) (herd.BulkResult, error) {
	// The hub answers 400 both for per-device failures (with a BulkResult)
	// and for a bad request as a whole (with an error document).
	var reply struct {
		herd.BulkResult
		Message string
	}
	var status int
	accept := func(s int) bool { status = s; return s == http.StatusOK || s == http.StatusBadRequest }
	h, err := c.do(ctx, request{method: http.MethodPost, path: "/devices", body: devices, out: &reply, accept: accept})
	if err != nil {
		return herd.BulkResult{}, err
	}
	if reply.Message != "" {
		return herd.BulkResult{}, errorFromMessage(h, status, reply.Message)
	}
	return reply.BulkResult, nil
}

// RegistryStatistics counts the registry's devices.
func (c *Client) RegistryStatistics(ctx context.Context) (herd.RegistryStatistics, error) {
	var out herd.RegistryStatistics
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/statistics/devices", out: &out})
	return out, err
}

// ServiceStatistics reports the hub's connected devices.
func (c *Client) ServiceStatistics(ctx context.Context) (herd.ServiceStatistics, error) {
	var out herd.ServiceStatistics
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/statistics/service", out: &out})
	return out, err
}
