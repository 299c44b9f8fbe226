package httpapi

import (
	"net/http"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
)

// moduleRoutes registers the module identities (§3.6):
// /devices/{id}/modules and /devices/{id}/modules/{mid}.
func (s *Server) moduleRoutes(read, write auth.Rights) {
	s.Handle("/devices/{id}/modules", map[string]Endpoint{
		http.MethodGet: {read, s.listModules},
	})
	s.Handle("/devices/{id}/modules/{mid}", map[string]Endpoint{
		http.MethodGet:    {read, s.getModule},
		http.MethodPut:    {write, s.putModule},
		http.MethodDelete: {write, s.deleteModule},
	})
}

// moduleTwinRoutes registers module twins: /twins/{id}/modules/{mid},
// with the rights of device twins.
func (s *Server) moduleTwinRoutes(svc auth.Rights) {
	s.Handle("/twins/{id}/modules/{mid}", map[string]Endpoint{
		http.MethodGet:   {svc, s.getModuleTwin},
		http.MethodPatch: {svc, s.patchModuleTwin},
		http.MethodPut:   {svc, s.replaceModuleTwin},
	})
}

func (s *Server) getModule(w http.ResponseWriter, r *http.Request) error {
	m, err := s.cfg.Registry.GetModule(r.Context(), r.PathValue("id"), r.PathValue("mid"))
	if err != nil {
		return err
	}
	writeEntity(w, m.ETag, m)
	return nil
}

// putModule creates a module (no If-Match) or updates it (If-Match "*" or
// its etag). The body's deviceId and moduleId, when given, must be the
// path's.
func (s *Server) putModule(w http.ResponseWriter, r *http.Request) error {
	id, mid := r.PathValue("id"), r.PathValue("mid")
	var m herd.Module
	if err := decodeBody(r, maxBody, &m); err != nil {
		return err
	}
	if m.DeviceID == "" {
		m.DeviceID = id
	}
	if m.ModuleID == "" {
		m.ModuleID = mid
	}
	if m.DeviceID != id || m.ModuleID != mid {
		return herd.Errorf(herd.ErrArgumentInvalid, "the body's deviceId %q and moduleId %q do not match the path's %q and %q",
			m.DeviceID, m.ModuleID, id, mid)
	}
	var (
		out *herd.Module
		err error
	)
	if ifMatch := r.Header.Get("If-Match"); ifMatch == "" {
		out, err = s.cfg.Registry.CreateModule(r.Context(), m)
	} else {
		out, err = s.cfg.Registry.UpdateModule(r.Context(), m, ifMatch)
	}
	if err != nil {
		return err
	}
	writeEntity(w, out.ETag, out)
	return nil
}

func (s *Server) deleteModule(w http.ResponseWriter, r *http.Request) error {
	if err := s.cfg.Registry.DeleteModule(r.Context(), r.PathValue("id"), r.PathValue("mid"), r.Header.Get("If-Match")); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listModules(w http.ResponseWriter, r *http.Request) error {
	ms, err := s.cfg.Registry.ListModules(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ms)
	return nil
}
