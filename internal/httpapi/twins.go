package httpapi

import (
	"net/http"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/twin"
)

func (s *Server) getTwin(w http.ResponseWriter, r *http.Request) error {
	t, err := s.cfg.Twins.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	s.cfg.Registry.OverlayTwin(t)
	writeEntity(w, t.ETag, t)
	return nil
}

func (s *Server) patchTwin(w http.ResponseWriter, r *http.Request) error {
	return s.writeTwin(w, r, false)
}

func (s *Server) replaceTwin(w http.ResponseWriter, r *http.Request) error {
	return s.writeTwin(w, r, true)
}

func (s *Server) writeTwin(w http.ResponseWriter, r *http.Request, replace bool) error {
	body, err := readBody(r, maxBody)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return herd.Errorf(herd.ErrArgumentNull, "the request body is empty")
	}
	p, err := twin.ParseService(body)
	if err != nil {
		return err
	}
	t, err := s.cfg.Twins.Update(r.Context(), r.PathValue("id"), p, replace, r.Header.Get("If-Match"))
	if err != nil {
		return err
	}
	s.cfg.Registry.OverlayTwin(t)
	writeEntity(w, t.ETag, t)
	return nil
}
