package ui

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/method"
	"github.com/herd-iot/herd/internal/twin"
	"github.com/herd-iot/herd/sas"
)

// deviceData is the device page's.
type deviceData struct {
	ID string
	// Device is the identity (nil when the policy cannot read the
	// registry); its keys are blank unless Keys is set.
	Device *herd.Device
	// Modules are the device's modules (without keys), when the policy
	// can read the registry.
	Modules []*herd.Module
	Keys    *deviceKeys
	Twin    *herd.Twin
	Diff    []diffRow
	// Pending counts desired properties the device has not reported back.
	Pending                         int
	DesiredVersion, ReportedVersion int64
	// The editor's text: the twin's, or what the operator submitted.
	TagsText, DesiredText string
	ETag                  string
	EditError             string
	Conflict              bool
	Method                methodForm
	Result                *methodResult
}

type deviceKeys struct {
	Primary, Secondary                     string
	PrimaryConnection, SecondaryConnection string
}

// methodForm is the direct-method form's values.
type methodForm struct {
	Name, Payload                   string
	ResponseTimeout, ConnectTimeout int
}

type methodResult struct {
	Status  int
	Payload string
	Error   string
}

// device serves a device's page.
func (s *Server) device(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.renderDevice(w, r, c, http.StatusOK, nil)
}

// renderDevice renders a device's page; edit, if not nil, changes the
// data after it is read (keys shown, an editor's error, a method result).
func (s *Server) renderDevice(w http.ResponseWriter, r *http.Request, c *call, status int, edit func(*deviceData)) error {
	id := r.PathValue("id")
	dd := &deviceData{ID: id, Method: methodForm{ResponseTimeout: 30}}
	if c.policy.Rights.Any(auth.RegistryRead | auth.RegistryWrite) {
		d, err := s.cfg.Registry.Get(r.Context(), id)
		if err != nil {
			return err
		}
		dd.Device = d
		ms, err := s.cfg.Registry.ListModules(r.Context(), id)
		if err != nil {
			return err
		}
		for _, m := range ms {
			m.Authentication.SymmetricKey = herd.SymmetricKey{}
		}
		dd.Modules = ms
	}
	t, err := s.twin(r, id)
	if err != nil {
		return err
	}
	dd.Twin = t
	dd.ETag = t.ETag
	dd.Diff, dd.Pending = twinDiff(t.Properties.Desired, t.Properties.Reported)
	dd.DesiredVersion, dd.ReportedVersion = version(t.Properties.Desired), version(t.Properties.Reported)
	dd.TagsText, dd.DesiredText = prettyJSON(section(t.Tags)), prettyJSON(section(t.Properties.Desired))
	if edit != nil {
		edit(dd)
	}
	if dd.Device != nil && dd.Keys == nil {
		dd.Device.Authentication.SymmetricKey = herd.SymmetricKey{}
	}
	d := s.data(r, c, id)
	d.Body = dd
	s.render(w, status, "device", d)
	return nil
}

// twin reads a device's twin through the twin query (SELECT * FROM
// devices WHERE deviceId = …), which every service right may run as POST
// /devices/query; GET /twins/{id} would need ServiceConnect.
func (s *Server) twin(r *http.Request, id string) (*herd.Twin, error) {
	res, err := s.cfg.Query.Run(r.Context(), "SELECT * FROM devices WHERE deviceId = "+quote(id), 1, "")
	if err != nil {
		return nil, err
	}
	if len(res.Items) == 0 {
		return nil, herd.Errorf(herd.ErrDeviceNotFound, "device %q does not exist", id)
	}
	t, ok := res.Items[0].(*herd.Twin)
	if !ok {
		return nil, herd.Errorf(herd.ErrInternal, "the twin query returned %T", res.Items[0])
	}
	s.cfg.Registry.OverlayTwin(t)
	return t, nil
}

// revealKeys shows the device's keys and connection strings (registry
// read rights, as GET /devices/{id} returns them).
func (s *Server) revealKeys(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.renderDevice(w, r, c, http.StatusOK, func(dd *deviceData) {
		if dd.Device == nil {
			return
		}
		k := dd.Device.Authentication.SymmetricKey
		gateway := ""
		if s.cfg.DeviceGateway != nil {
			gateway = s.cfg.DeviceGateway()
		}
		conn := func(key string) string {
			if key == "" {
				return ""
			}
			return sas.ConnectionString{HostName: s.cfg.Auth.Host(), DeviceID: dd.ID, SharedAccessKey: key,
				GatewayHostName: gateway}.String()
		}
		dd.Keys = &deviceKeys{Primary: k.PrimaryKey, Secondary: k.SecondaryKey,
			PrimaryConnection: conn(k.PrimaryKey), SecondaryConnection: conn(k.SecondaryKey)}
	})
}

// setStatus enables or disables a device, as PUT /devices/{id} does
// (RegistryWrite); a disabled device is disconnected.
func (s *Server) setStatus(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	st := herd.DeviceStatus(r.PostFormValue("status"))
	if st != herd.DeviceEnabled && st != herd.DeviceDisabled {
		return herd.Errorf(herd.ErrArgumentInvalid, "status must be enabled or disabled")
	}
	d, err := s.cfg.Registry.Get(r.Context(), id)
	if err != nil {
		return err
	}
	d.Status = st
	d.StatusReason = nil
	if reason := strings.TrimSpace(r.PostFormValue("reason")); reason != "" && st == herd.DeviceDisabled {
		d.StatusReason = &reason
	}
	if _, err := s.cfg.Registry.Update(r.Context(), *d, d.ETag); err != nil {
		return err
	}
	s.redirect(w, r, c, "/ui/devices/"+pathEscape(id), "Device "+string(st)+".")
	return nil
}

// regenerate gives a device new random keys (primary, secondary or both),
// as PUT /devices/{id} with new keys does (RegistryWrite).
func (s *Server) regenerate(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	which := r.PostFormValue("key")
	if which != "primary" && which != "secondary" && which != "both" {
		return herd.Errorf(herd.ErrArgumentInvalid, "key must be primary, secondary or both")
	}
	d, err := s.cfg.Registry.Get(r.Context(), id)
	if err != nil {
		return err
	}
	if d.Authentication.Type != herd.AuthSAS {
		return herd.Errorf(herd.ErrArgumentInvalid, "device %q authenticates with %s, not symmetric keys", id, d.Authentication.Type)
	}
	k := &d.Authentication.SymmetricKey
	if which != "secondary" {
		k.PrimaryKey = auth.NewKey()
	}
	if which != "primary" {
		k.SecondaryKey = auth.NewKey()
	}
	if _, err := s.cfg.Registry.Update(r.Context(), *d, d.ETag); err != nil {
		return err
	}
	msg := map[string]string{"primary": "A new primary key", "secondary": "A new secondary key", "both": "New keys"}[which]
	s.redirect(w, r, c, "/ui/devices/"+pathEscape(id), msg+" replaced the old; devices connected with it were disconnected.")
	return nil
}

// editTwin replaces the twin's tags and desired properties with the
// editor's text (PUT /twins/{id} with If-Match: the etag the page was
// rendered with, ServiceConnect). A twin changed meanwhile is not
// overwritten: the page shows the conflict with the current twin and the
// operator's text.
func (s *Server) editTwin(w http.ResponseWriter, r *http.Request, c *call) error {
	tags, desired, etag := r.PostFormValue("tags"), r.PostFormValue("desired"), r.PostFormValue("etag")
	keep := func(msg string, conflict bool) func(*deviceData) {
		return func(dd *deviceData) {
			dd.TagsText, dd.DesiredText, dd.EditError, dd.Conflict = tags, desired, msg, conflict
			if !conflict {
				dd.ETag = etag
			}
		}
	}
	err := replaceTwin(tags, desired, func(p twin.Patch) error {
		_, err := s.cfg.Twins.Update(r.Context(), r.PathValue("id"), p, true, etag)
		return err
	})
	switch {
	case err == nil:
		s.redirect(w, r, c, "/ui/devices/"+pathEscape(r.PathValue("id"))+"#twin", "Twin saved; connected devices were sent the desired change.")
		return nil
	case herd.IsCode(err, herd.ErrPreconditionFailed):
		return s.renderDevice(w, r, c, http.StatusConflict, keep("The twin changed since this page was loaded (its etag is no longer "+
			strconv.Quote(etag)+"). Nothing was saved. Compare with the current twin below, then save again.", true))
	case herd.IsCode(err, herd.ErrDeviceNotFound):
		return err
	}
	if herd.ErrorCodeOf(err) == herd.ErrInternal {
		return err
	}
	return s.renderDevice(w, r, c, http.StatusBadRequest, keep(herd.ErrorMessage(err), false))
}

// replaceTwin turns the editor's two JSON objects into a twin replace and
// hands it to write (a device's or a module's twin).
func replaceTwin(tags, desired string, write func(twin.Patch) error) error {
	body, err := twinBody(tags, desired)
	if err != nil {
		return err
	}
	p, err := twin.ParseService(body)
	if err != nil {
		return err
	}
	return write(p)
}

// twinBody builds the body of a twin replace from the editor's two JSON
// objects.
func twinBody(tags, desired string) ([]byte, error) {
	var t, d json.RawMessage
	for _, f := range []struct {
		name, text string
		dst        *json.RawMessage
	}{{"Tags", tags, &t}, {"Desired properties", desired, &d}} {
		text := strings.TrimSpace(f.text)
		if text == "" {
			text = "{}"
		}
		var v any
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil || dec.More() {
			return nil, herd.Errorf(herd.ErrArgumentInvalid, "%s: not valid JSON", f.name)
		}
		if _, ok := v.(map[string]any); !ok {
			return nil, herd.Errorf(herd.ErrArgumentInvalid, "%s must be a JSON object", f.name)
		}
		var b bytes.Buffer
		_ = json.Compact(&b, []byte(text))
		*f.dst = b.Bytes()
	}
	return json.Marshal(map[string]any{"tags": t, "properties": map[string]any{"desired": d}})
}

// invoke calls a direct method on the device and shows its answer (POST
// /twins/{id}/methods, ServiceConnect).
func (s *Server) invoke(w http.ResponseWriter, r *http.Request, c *call) error {
	f, res, err := s.callMethod(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	return s.renderDevice(w, r, c, http.StatusOK, func(dd *deviceData) { dd.Method, dd.Result = f, res })
}

// callMethod reads the direct-method form and calls the method on target
// (a device id, or a module's identity); the error is the store's, the
// call's own failures are in the result.
func (s *Server) callMethod(r *http.Request, target string) (methodForm, *methodResult, error) {
	f := methodForm{Name: strings.TrimSpace(r.PostFormValue("methodName")), Payload: r.PostFormValue("payload")}
	var errs []string
	f.ResponseTimeout, errs = formInt(r, "responseTimeout", 30, errs)
	f.ConnectTimeout, errs = formInt(r, "connectTimeout", 0, errs)
	res := &methodResult{}
	req := herd.MethodRequest{MethodName: f.Name, ResponseTimeoutInSeconds: f.ResponseTimeout, ConnectTimeoutInSeconds: f.ConnectTimeout}
	if p := strings.TrimSpace(f.Payload); p != "" {
		if !json.Valid([]byte(p)) {
			errs = append(errs, "the payload is not valid JSON")
		}
		req.Payload = json.RawMessage(p)
	}
	if len(errs) == 0 {
		if err := method.Validate(&req); err != nil {
			errs = append(errs, herd.ErrorMessage(err))
		}
	}
	if len(errs) > 0 {
		res.Error = strings.Join(errs, "; ")
	} else if out, err := s.cfg.Methods.Invoke(r.Context(), target, req); err != nil {
		if herd.ErrorCodeOf(err) == herd.ErrInternal {
			return f, nil, err
		}
		res.Error = string(herd.ErrorCodeOf(err)) + ": " + herd.ErrorMessage(err)
	} else {
		res.Status, res.Payload = out.Status, prettyJSON(out.Payload)
	}
	return f, res, nil
}

// formInt reads a whole number from a form field (def when empty).
func formInt(r *http.Request, name string, def int, errs []string) (int, []string) {
	v := strings.TrimSpace(r.PostFormValue(name))
	if v == "" {
		return def, errs
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def, append(errs, name+" must be a whole number of seconds")
	}
	return n, errs
}
