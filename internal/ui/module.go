package ui

import (
	"net/http"
	"strconv"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/twin"
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
	// The editor's text: the twin's, or what the operator submitted.
	TagsText, DesiredText string
	ETag                  string
	EditError             string
	Conflict              bool
}

// module serves GET /ui/devices/{id}/modules/{mid}.
func (s *Server) module(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.renderModule(w, r, c, http.StatusOK, nil)
}

func (s *Server) renderModule(w http.ResponseWriter, r *http.Request, c *call, status int, edit func(*moduleData)) error {
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
	md.ETag = t.ETag
	md.TagsText, md.DesiredText = prettyJSON(section(t.Tags)), prettyJSON(section(t.Properties.Desired))
	if edit != nil {
		edit(md)
	}
	d := s.data(r, c, id+"/"+mid)
	d.Body = md
	s.render(w, status, "module", d)
	return nil
}

// editModuleTwin serves POST /ui/devices/{id}/modules/{mid}/twin: the
// editor's tags and desired properties replace the module twin's, if its
// etag is still the page's (as the device page's editor does).
func (s *Server) editModuleTwin(w http.ResponseWriter, r *http.Request, c *call) error {
	id, mid := r.PathValue("id"), r.PathValue("mid")
	tags, desired, etag := r.PostFormValue("tags"), r.PostFormValue("desired"), r.PostFormValue("etag")
	keep := func(msg string, conflict bool) func(*moduleData) {
		return func(md *moduleData) {
			md.TagsText, md.DesiredText, md.EditError, md.Conflict = tags, desired, msg, conflict
			if !conflict {
				md.ETag = etag
			}
		}
	}
	err := replaceTwin(tags, desired, func(p twin.Patch) error {
		_, err := s.cfg.Twins.UpdateModule(r.Context(), id, mid, p, true, etag)
		return err
	})
	switch {
	case err == nil:
		s.redirect(w, r, c, "/ui/devices/"+pathEscape(id)+"/modules/"+pathEscape(mid)+"#twin", "Module twin saved; a connected module was sent the desired change.")
		return nil
	case herd.IsCode(err, herd.ErrPreconditionFailed):
		return s.renderModule(w, r, c, http.StatusConflict, keep("The module twin changed since this page was loaded (its etag is no longer "+
			strconv.Quote(etag)+"). Nothing was saved. Compare with the current twin below, then save again.", true))
	case herd.IsCode(err, herd.ErrDeviceNotFound), herd.IsCode(err, herd.ErrModuleNotFound), herd.ErrorCodeOf(err) == herd.ErrInternal:
		return err
	}
	return s.renderModule(w, r, c, http.StatusBadRequest, keep(herd.ErrorMessage(err), false))
}

// invokeModule serves POST /ui/devices/{id}/modules/{mid}/method: a direct
// method on the module, answered on its page.
func (s *Server) invokeModule(w http.ResponseWriter, r *http.Request, c *call) error {
	f, res, err := s.callMethod(r, herd.ModuleIdentity(r.PathValue("id"), r.PathValue("mid")))
	if err != nil {
		return err
	}
	return s.renderModule(w, r, c, http.StatusOK, func(md *moduleData) { md.Method, md.Result = f, res })
}
