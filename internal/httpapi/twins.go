package httpapi

import (
	"net/http"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/registry"
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
	p, err := readTwinPatch(r)
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

// readTwinPatch reads a service-side twin patch (or replacement) body.
func readTwinPatch(r *http.Request) (twin.Patch, error) {
	body, err := readBody(r, maxBody)
	if err != nil {
		return twin.Patch{}, err
	}
	if len(body) == 0 {
		return twin.Patch{}, herd.Errorf(herd.ErrArgumentNull, "the request body is empty")
	}
	return twin.ParseService(body)
}

func (s *Server) getModuleTwin(w http.ResponseWriter, r *http.Request) error {
	if err := checkModulePath(r); err != nil {
		return err
	}
	t, err := s.cfg.Twins.GetModule(r.Context(), r.PathValue("id"), r.PathValue("mid"))
	if err != nil {
		return err
	}
	writeEntity(w, t.ETag, t)
	return nil
}

func (s *Server) patchModuleTwin(w http.ResponseWriter, r *http.Request) error {
	return s.writeModuleTwin(w, r, false)
}

func (s *Server) replaceModuleTwin(w http.ResponseWriter, r *http.Request) error {
	return s.writeModuleTwin(w, r, true)
}

func (s *Server) writeModuleTwin(w http.ResponseWriter, r *http.Request, replace bool) error {
	if err := checkModulePath(r); err != nil {
		return err
	}
	p, err := readTwinPatch(r)
	if err != nil {
		return err
	}
	t, err := s.cfg.Twins.UpdateModule(r.Context(), r.PathValue("id"), r.PathValue("mid"), p, replace, r.Header.Get("If-Match"))
	if err != nil {
		return err
	}
	writeEntity(w, t.ETag, t)
	return nil
}

// checkModulePath answers DeviceNotFound or ModuleNotFound for ids that
// cannot name a device or a module.
func checkModulePath(r *http.Request) error {
	id, mid := r.PathValue("id"), r.PathValue("mid")
	if registry.ValidateDeviceID(id) != nil {
		return herd.Errorf(herd.ErrDeviceNotFound, "device %q does not exist", id)
	}
	if registry.ValidateModuleID(mid) != nil {
		return herd.Errorf(herd.ErrModuleNotFound, "device %q has no module %q", id, mid)
	}
	return nil
}
