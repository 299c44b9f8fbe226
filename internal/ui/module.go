package ui

import (
	"net/http"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
)

// moduleData is a module's page: its identity, its twin (desired vs
// reported, read only) and the direct-method form.
type moduleData struct {
	DeviceID, ModuleID string
	// Module is the identity without its keys (nil when the policy
	// cannot read the registry).
	Module                          *herd.Module
	Twin                            *herd.Twin
	Diff                            []diffRow
	Pending                         int
	DesiredVersion, ReportedVersion int64
	Method                          methodForm
	Result                          *methodResult
}

// module serves GET /ui/devices/{id}/modules/{mid}.
func (s *Server) module(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.renderModule(w, r, c, nil)
}

func (s *Server) renderModule(w http.ResponseWriter, r *http.Request, c *call, edit func(*moduleData)) error {
	id, mid := r.PathValue("id"), r.PathValue("mid")
	md := &moduleData{DeviceID: id, ModuleID: mid, Method: methodForm{ResponseTimeout: 30}}
	if c.policy.Rights.Any(auth.RegistryRead | auth.RegistryWrite) {
		m, err := s.cfg.Registry.GetModule(r.Context(), id, mid)
		if err != nil {
			return err
		}
		m.Authentication.SymmetricKey = herd.SymmetricKey{}
		md.Module = m
	}
	// The module twin through the query language, which every service
	// right may run (as the device page reads the device twin).
	res, err := s.cfg.Query.Run(r.Context(), "SELECT * FROM devices.modules WHERE deviceId = "+quote(id)+" AND moduleId = "+quote(mid), 1, "")
	if err != nil {
		return err
	}
	if len(res.Items) == 0 {
		return herd.Errorf(herd.ErrModuleNotFound, "device %q has no module %q", id, mid)
	}
	t, ok := res.Items[0].(*herd.Twin)
	if !ok {
		return herd.Errorf(herd.ErrInternal, "the module twin query returned %T", res.Items[0])
	}
	md.Twin = t
	md.Diff, md.Pending = twinDiff(t.Properties.Desired, t.Properties.Reported)
	md.DesiredVersion, md.ReportedVersion = version(t.Properties.Desired), version(t.Properties.Reported)
	if edit != nil {
		edit(md)
	}
	d := s.data(r, c, id+"/"+mid)
	d.Body = md
	s.render(w, http.StatusOK, "module", d)
	return nil
}

// invokeModule serves POST /ui/devices/{id}/modules/{mid}/method: a direct
// method on the module, answered on its page.
func (s *Server) invokeModule(w http.ResponseWriter, r *http.Request, c *call) error {
	f, res, err := s.callMethod(r, herd.ModuleIdentity(r.PathValue("id"), r.PathValue("mid")))
	if err != nil {
		return err
	}
	return s.renderModule(w, r, c, func(md *moduleData) { md.Method, md.Result = f, res })
}
