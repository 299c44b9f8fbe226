package service

import (
	"context"
	"net/http"
	"net/url"

	"github.com/herd-iot/herd"
)

// Automatic device configurations (docs/configurations.md): desired
// properties the hub applies to every device a target condition selects,
// as devices come to match it.

func configPath(id string) string { return "/configurations/" + url.PathEscape(id) }

// CreateConfiguration adds a configuration (c.ID names it); an id taken
// fails with ErrConfigurationAlreadyExists. The hub applies it in the
// background.
func (c *Client) CreateConfiguration(ctx context.Context, cfg herd.Configuration) (*herd.Configuration, error) {
	var out herd.Configuration
	if _, err := c.do(ctx, request{method: http.MethodPut, path: configPath(cfg.ID), body: cfg, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateConfiguration changes a configuration's target condition,
// priority, labels or metrics (its content cannot change). etag "" or "*"
// updates it unconditionally; otherwise it must be the current etag.
func (c *Client) UpdateConfiguration(ctx context.Context, cfg herd.Configuration, etag string) (*herd.Configuration, error) {
	if etag == "" {
		etag = "*"
	}
	var out herd.Configuration
	if _, err := c.do(ctx, request{method: http.MethodPut, path: configPath(cfg.ID), header: ifMatch(etag), body: cfg, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetConfiguration returns a configuration with its metrics counted now.
func (c *Client) GetConfiguration(ctx context.Context, id string) (*herd.Configuration, error) {
	var out herd.Configuration
	if _, err := c.do(ctx, request{method: http.MethodGet, path: configPath(id), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListConfigurations returns every configuration, in id order.
func (c *Client) ListConfigurations(ctx context.Context) ([]herd.Configuration, error) {
	var out []herd.Configuration
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/configurations", out: &out}); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteConfiguration removes a configuration; devices keep the desired
// properties it set. etag as in UpdateConfiguration.
func (c *Client) DeleteConfiguration(ctx context.Context, id, etag string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: configPath(id), header: ifMatch(etag)})
	return err
}
