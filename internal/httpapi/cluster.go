package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
)

// Cluster is what GET /cluster shows (cluster.Service).
type Cluster interface {
	Status(ctx context.Context) (*herd.ClusterStatus, error)
}

// HandleCluster serves GET /cluster: the node that answers and every node
// of its store with its lease (registry read rights, as the registry's
// statistics).
func (s *Server) HandleCluster(c Cluster) {
	s.Handle("/cluster", map[string]Endpoint{
		http.MethodGet: {auth.RegistryRead | auth.RegistryWrite, func(w http.ResponseWriter, r *http.Request) error {
			st, err := c.Status(r.Context())
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, st)
			return nil
		}},
	})
}
