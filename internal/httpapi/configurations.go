package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
)

// Configurations manages automatic device configurations
// (internal/config.Service).
type Configurations interface {
	Put(ctx context.Context, id string, body []byte, ifMatch string) (*herd.Configuration, error)
	Get(ctx context.Context, id string) (*herd.Configuration, error)
	List(ctx context.Context, top int) ([]*herd.Configuration, error)
	Delete(ctx context.Context, id, ifMatch string) error
}

// HandleConfigurations registers the configuration API, as the Azure
// service SDKs call it (Node Registry.addConfiguration and friends):
//
//	GET    /configurations[?top=N]  every configuration (a JSON array)
//	GET    /configurations/{id}     one, with its metrics counted now
//	PUT    /configurations/{id}     create (no If-Match) or change (If-Match: etag or *)
//	DELETE /configurations/{id}     remove (If-Match optional)
//
// Reads need RegistryRead or RegistryWrite, changes RegistryWrite.
func (s *Server) HandleConfigurations(cs Configurations) {
	read := auth.RegistryRead | auth.RegistryWrite
	write := auth.RegistryWrite
	s.Handle("/configurations", map[string]Endpoint{
		http.MethodGet: {read, func(w http.ResponseWriter, r *http.Request) error {
			top := 0
			if v := r.URL.Query().Get("top"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return herd.Errorf(herd.ErrArgumentInvalid, "top must be a whole number, not %q", v)
				}
				top = n
			}
			list, err := cs.List(r.Context(), top)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, list)
			return nil
		}},
	})
	s.Handle("/configurations/{id}", map[string]Endpoint{
		http.MethodGet: {read, func(w http.ResponseWriter, r *http.Request) error {
			c, err := cs.Get(r.Context(), r.PathValue("id"))
			if err != nil {
				return err
			}
			writeEntity(w, c.ETag, c)
			return nil
		}},
		http.MethodPut: {write, func(w http.ResponseWriter, r *http.Request) error {
			body, err := readBody(r, maxBody)
			if err != nil {
				return err
			}
			c, err := cs.Put(r.Context(), r.PathValue("id"), body, r.Header.Get("If-Match"))
			if err != nil {
				return err
			}
			writeEntity(w, c.ETag, c)
			return nil
		}},
		http.MethodDelete: {write, func(w http.ResponseWriter, r *http.Request) error {
			if err := cs.Delete(r.Context(), r.PathValue("id"), r.Header.Get("If-Match")); err != nil {
				return err
			}
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusNoContent)
			return nil
		}},
	})
}
