package ui

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
)

// homeData is the overview page's.
type homeData struct {
	Stats      *herd.RegistryStatistics // nil without registry rights
	Connected  int64
	Running    []*herd.Job
	MoreJobs   bool
	ServiceURL string
}

func (s *Server) home(w http.ResponseWriter, r *http.Request, c *call) error {
	hd := homeData{}
	if c.policy.Rights.Any(auth.RegistryRead | auth.RegistryWrite) {
		st, err := s.cfg.Registry.Statistics(r.Context())
		if err != nil {
			return err
		}
		hd.Stats = &st
	}
	if s.cfg.Connected != nil {
		hd.Connected = s.cfg.Connected()
	}
	jobs, next, err := s.cfg.Jobs.List(r.Context(), job.ListQuery{Status: string(herd.JobRunning), PageSize: 10})
	if err != nil {
		return err
	}
	hd.Running, hd.MoreJobs = jobs, next != ""
	d := s.data(r, c, "Overview")
	d.Body = hd
	s.render(w, http.StatusOK, "home", d)
	return nil
}

// devicesData is the device list's: one page of a twin query.
type devicesData struct {
	// Condition is the WHERE part as typed ("" for every device).
	Condition  string
	QueryError string
	Rows       []*herd.Twin
	// Total and Connected count the devices matching (counted on the
	// first page; later pages carry the numbers along).
	Total, Connected int64
	Page             int
	Next, First      string
	// Back is this page's URL (forms return to it).
	Back         string
	Selected     map[string]bool
	SelectedList []string
	MaxSelection int
	HubConnected int64
	// Bulk is the bulk action form's defaults.
	Bulk jobForm
}

// condition returns the WHERE part a user typed into the query box: a
// leading WHERE is dropped; nothing means every device ("*").
func condition(text string) string {
	c := strings.TrimSpace(text)
	if len(c) >= 5 && strings.EqualFold(c[:5], "WHERE") && (len(c) == 5 || c[5] == ' ' || c[5] == '\t' || c[5] == '\n' || c[5] == '(') {
		c = strings.TrimSpace(c[5:])
	}
	if c == "" {
		return "*"
	}
	return c
}

// devices serves the device list: the twin query box over the whole
// fleet, one page (devicePage twins) at a time through the query
// service's continuation tokens, as POST /devices/query pages.
func (s *Server) devices(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	dd := devicesData{Condition: strings.TrimSpace(q.Get("q")), Page: 1, MaxSelection: maxSelection}
	if s.cfg.Connected != nil {
		dd.HubConnected = s.cfg.Connected()
	}
	if p, err := strconv.Atoi(q.Get("p")); err == nil && p > 1 {
		dd.Page = p
	}
	cond := condition(dd.Condition)
	status := http.StatusOK
	where, err := query.WhereClause(cond)
	if err == nil {
		cont := q.Get("c")
		if cont == "" {
			dd.Total, dd.Connected, err = s.cfg.Query.CountTargets(r.Context(), cond)
		} else {
			dd.Total, _ = strconv.ParseInt(q.Get("n"), 10, 64)
			dd.Connected, _ = strconv.ParseInt(q.Get("k"), 10, 64)
		}
		var res *query.Result
		if err == nil {
			res, err = s.cfg.Query.Run(r.Context(), "SELECT * FROM devices"+where, devicePage, cont)
		}
		if err == nil {
			for _, it := range res.Items {
				if t, ok := it.(*herd.Twin); ok {
					s.cfg.Registry.OverlayTwin(t)
					dd.Rows = append(dd.Rows, t)
				}
			}
			if res.Continuation != "" {
				v := url.Values{"q": {dd.Condition}, "c": {res.Continuation}, "p": {strconv.Itoa(dd.Page + 1)},
					"n": {strconv.FormatInt(dd.Total, 10)}, "k": {strconv.FormatInt(dd.Connected, 10)}}
				dd.Next = "/ui/devices?" + v.Encode()
			}
		}
	}
	if err != nil {
		if !herd.IsCode(err, herd.ErrArgumentInvalid) && !herd.IsCode(err, herd.ErrPreconditionFailed) {
			return err
		}
		dd.QueryError = herd.ErrorMessage(err)
		status = http.StatusBadRequest
	}
	if dd.Page > 1 {
		dd.First = "/ui/devices?" + url.Values{"q": {dd.Condition}}.Encode()
	}
	dd.Bulk = jobForm{Type: string(herd.JobDeviceMethod)}
	if !c.policy.Rights.Any(auth.ServiceConnect) {
		dd.Bulk.Type = string(herd.JobUpdateTwin)
	}
	dd.Back = r.URL.RequestURI()
	dd.SelectedList = c.sess.selected()
	dd.Selected = make(map[string]bool, len(dd.SelectedList))
	for _, id := range dd.SelectedList {
		dd.Selected[id] = true
	}
	d := s.data(r, c, "Devices")
	d.Body = dd
	s.render(w, status, "devices", d)
	return nil
}

// selection changes the devices selected across pages: "update" makes
// the devices of one page (page) selected exactly when checked (id);
// "clear" empties the selection.
func (s *Server) selection(w http.ResponseWriter, r *http.Request, c *call) error {
	back := localNext(r.PostFormValue("back"))
	if r.PostFormValue("op") == "clear" {
		c.sess.clearSelection()
		s.redirect(w, r, c, back, "Selection cleared.")
		return nil
	}
	checked := map[string]bool{}
	for _, id := range r.PostForm["id"] {
		checked[id] = true
	}
	var add, remove []string
	for _, id := range r.PostForm["page"] {
		if checked[id] {
			add = append(add, id)
		} else {
			remove = append(remove, id)
		}
	}
	c.sess.selectDevices(remove, false)
	if !c.sess.selectDevices(add, true) {
		s.redirect(w, r, c, back, "At most "+strconv.Itoa(maxSelection)+
			" devices can be selected by hand; for more, run the action on every device matching the query.")
		return nil
	}
	s.redirect(w, r, c, back, strconv.Itoa(len(c.sess.selected()))+" devices selected.")
	return nil
}

// selectionCondition is the queryCondition of the selected devices.
func selectionCondition(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = quote(id)
	}
	return "deviceId IN [" + strings.Join(q, ", ") + "]"
}
