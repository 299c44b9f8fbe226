package httpapi

import (
	"net/http"
	"strconv"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/registry"
)

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.cfg.Registry.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeEntity(w, d.ETag, d)
	return nil
}

// putDevice creates a device (no If-Match) or updates it (If-Match "*" or
// its etag).
func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var d herd.Device
	if err := decodeBody(r, maxBody, &d); err != nil {
		return err
	}
	if d.DeviceID == "" {
		d.DeviceID = id
	}
	if d.DeviceID != id {
		return herd.Errorf(herd.ErrArgumentInvalid, "the body's deviceId %q does not match the path's %q", d.DeviceID, id)
	}
	ifMatch := r.Header.Get("If-Match")
	var (
		out *herd.Device
		err error
	)
	if ifMatch == "" {
		out, err = s.cfg.Registry.Create(r.Context(), d)
	} else {
		out, err = s.cfg.Registry.Update(r.Context(), d, ifMatch)
	}
	if err != nil {
		return err
	}
	writeEntity(w, out.ETag, out)
	return nil
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	if err := s.cfg.Registry.Delete(r.Context(), r.PathValue("id"), r.Header.Get("If-Match")); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) error {
	top := 1000
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return herd.Errorf(herd.ErrArgumentInvalid, "top=%q is not a number", v)
		}
		top = n
	}
	ds, err := s.cfg.Registry.List(r.Context(), top)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ds)
	return nil
}

func (s *Server) bulkDevices(w http.ResponseWriter, r *http.Request) error {
	var ds []herd.ImportDevice
	if err := decodeBody(r, maxBulkBody, &ds); err != nil {
		return err
	}
	if len(ds) > registry.MaxBulkDevices {
		return herd.Errorf(herd.ErrTooManyDevices, "a bulk request may name at most %d devices, not %d", registry.MaxBulkDevices, len(ds))
	}
	res, err := s.cfg.Registry.Bulk(r.Context(), ds)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if !res.IsSuccessful {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, res)
	return nil
}

func (s *Server) registryStatistics(w http.ResponseWriter, r *http.Request) error {
	st, err := s.cfg.Registry.Statistics(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) serviceStatistics(w http.ResponseWriter, r *http.Request) error {
	var n int64
	if s.cfg.Connected != nil {
		n = s.cfg.Connected()
	}
	writeJSON(w, http.StatusOK, herd.ServiceStatistics{ConnectedDeviceCount: n})
	return nil
}
