package service

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

// Cluster returns the nodes of the hub's store with their leases (GET
// /cluster, Herd's own; registry read rights).
func (c *Client) Cluster(ctx context.Context) (*herd.ClusterStatus, error) {
	var out herd.ClusterStatus
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/cluster", out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}
