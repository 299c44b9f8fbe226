package httpapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
)

// queryRoutes registers POST /devices/query, the twin query (§3.5, §3.6,
// §7). Like the jobs API it takes ServiceConnect or either registry right
// (§2.6). Only POST is claimed, so GET /devices/query still reads a device
// whose id is "query".
func (s *Server) queryRoutes() {
	if s.cfg.Query == nil {
		return
	}
	rights := auth.ServiceConnect | auth.RegistryRead | auth.RegistryWrite
	s.Handle("POST /devices/query", map[string]Endpoint{http.MethodPost: {rights, s.query}})
}

// query runs one page of a query. The page size comes from
// x-ms-max-item-count (default and cap 100), the next page from
// x-ms-continuation; the reply is a bare JSON array with x-ms-item-type
// (Twin, DeviceJob or Raw) and x-ms-continuation only while more pages
// remain (an empty one makes the Node SDK loop forever).
func (s *Server) query(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Query *string `json:"query"`
	}
	if err := decodeBody(r, maxBody, &body); err != nil {
		return err
	}
	if body.Query == nil || strings.TrimSpace(*body.Query) == "" {
		return herd.Errorf(herd.ErrArgumentNull, "the body must be {\"query\": \"SELECT … FROM devices …\"}")
	}
	size := 0
	if h := r.Header.Get("x-ms-max-item-count"); h != "" {
		n, err := strconv.Atoi(strings.TrimSpace(h))
		if err != nil || n < 1 {
			return herd.Errorf(herd.ErrArgumentInvalid, "x-ms-max-item-count %q is not a positive number", h)
		}
		size = n
	}
	res, err := s.cfg.Query.Run(r.Context(), *body.Query, size, r.Header.Get("x-ms-continuation"))
	if err != nil {
		return err
	}
	w.Header().Set("x-ms-item-type", res.ItemType)
	if res.Continuation != "" {
		w.Header().Set("x-ms-continuation", res.Continuation)
	}
	writeJSON(w, http.StatusOK, res.Items)
	return nil
}
