package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/httpapi"
	"github.com/herd-iot/herd/internal/job"
)

// allow checks a job's kind against the session's policy with the rule
// of PUT /jobs/v2/{id} (httpapi.JobRights).
func allow(p auth.Policy, op string) job.Allow {
	return func(t herd.JobType) error {
		return p.Require(httpapi.JobRights(t), fmt.Sprintf("%s a %s job", op, t))
	}
}

// jobsData is the job list's.
type jobsData struct {
	Status, Type string
	Statuses     []string
	Rows         []jobRow
	Next, First  string
}

type jobRow struct {
	Job      *herd.Job
	Progress progressView
}

var jobStatuses = []string{"queued", "scheduled", "running", "paused", "completed", "failed", "cancelled"}

func (s *Server) jobs(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	jd := jobsData{Status: q.Get("status"), Type: q.Get("type"), Statuses: jobStatuses}
	jobs, next, err := s.cfg.Jobs.List(r.Context(), job.ListQuery{Status: jd.Status, Type: jd.Type, Continuation: q.Get("c"), PageSize: jobPage, Newest: true})
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	for _, j := range jobs {
		jd.Rows = append(jd.Rows, jobRow{Job: j, Progress: progressOf(j, now)})
	}
	filter := url.Values{"status": {jd.Status}, "type": {jd.Type}}
	if next != "" {
		v := url.Values{"status": {jd.Status}, "type": {jd.Type}, "c": {next}}
		jd.Next = "/ui/jobs?" + v.Encode()
	}
	if q.Get("c") != "" {
		jd.First = "/ui/jobs?" + filter.Encode()
	}
	d := s.data(r, c, "Jobs")
	d.Body = jd
	s.render(w, http.StatusOK, "jobs", d)
	return nil
}

// progressView is a job's progress as the pages and the live stream
// show it.
type progressView struct {
	Status    herd.JobStatus `json:"status"`
	Message   string         `json:"message"`
	Total     int64          `json:"total"`
	Succeeded int64          `json:"succeeded"`
	Failed    int64          `json:"failed"`
	Running   int64          `json:"running"`
	Pending   int64          `json:"pending"`
	Done      int64          `json:"done"`
	Percent   string         `json:"percent"`
	// Rate is devices done per second since the start; ETA the time left
	// at that rate.
	Rate  string `json:"rate"`
	ETA   string `json:"eta"`
	Ended bool   `json:"ended"`
	// Wave is where a job with waves is ("2 of 3"; "–" before it
	// starts); HasWaves says it has waves.
	Wave     string `json:"wave"`
	HasWaves bool   `json:"-"`
	// Which of the job page's actions its status allows (the page shows
	// them to callers with the rights, and follows them live).
	Cancellable bool `json:"cancellable"`
	Pausable    bool `json:"pausable"`
	Resumable   bool `json:"resumable"`
}

func progressOf(j *herd.Job, now time.Time) progressView {
	p := progressView{Status: j.Status, Message: j.StatusMessage, Ended: job.Ended(j), Rate: "–", ETA: "–"}
	if j.FailureReason != "" {
		p.Message = j.FailureReason
	}
	if st := j.DeviceJobStatistics; st != nil {
		p.Total, p.Succeeded, p.Failed, p.Running, p.Pending = st.DeviceCount, st.SucceededCount, st.FailedCount, st.RunningCount, st.PendingCount
	}
	p.Done = p.Succeeded + p.Failed
	p.Cancellable = !p.Ended && !j.Status.Terminal()
	p.Pausable = p.Cancellable && j.Status != herd.JobPaused
	p.Resumable = p.Cancellable && j.Status == herd.JobPaused
	if j.Herd != nil && j.Herd.Rollout != nil && len(j.Herd.Rollout.Waves) > 0 {
		p.HasWaves, p.Wave = true, "–"
		if hs := j.HerdStatus; hs != nil {
			p.Wave = fmt.Sprintf("%d of %d", hs.Wave, hs.Waves)
		}
	}
	p.Percent = "0"
	if p.Total > 0 {
		p.Percent = strconv.FormatFloat(100*float64(p.Done)/float64(p.Total), 'f', 1, 64)
	} else if p.Ended {
		p.Percent = "100"
	}
	if j.StartTime == nil {
		return p
	}
	start := j.StartTime.Time
	switch {
	case j.Status == herd.JobQueued || j.Status == herd.JobScheduled:
		if start.After(now) {
			p.ETA = "starts in " + seconds(start.Sub(now).Seconds())
		}
		return p
	case p.Ended:
		p.ETA = "ended " + when(j.EndTime)
	}
	end := now
	if j.EndTime != nil {
		end = j.EndTime.Time
	}
	if secs := end.Sub(start).Seconds(); secs > 0 && p.Done > 0 {
		rate := float64(p.Done) / secs
		p.Rate = num(int64(math.Round(rate))) + " devices/s"
		if !p.Ended && j.Status == herd.JobRunning {
			p.ETA = seconds(float64(p.Total-p.Done) / rate)
		}
	}
	return p
}

// jobData is a job's page.
type jobData struct {
	Job      *herd.Job
	Progress progressView
	Filter   string
	Filters  []string
	Rows     []*herd.DeviceJob
	Next     string
	First    string
	// CanSteer: the caller may cancel, pause and resume the job, and it
	// has not ended; which of those its status allows is in Progress.
	CanSteer bool
	Request  string
}

var deviceJobStatuses = []string{"pending", "running", "completed", "failed", "canceled"}

// job serves a job's page: progress (live through jobEvents while it
// runs), and its device records one page at a time (SELECT * FROM
// devices.jobs WHERE devices.jobs.jobId = …), filtered by outcome.
func (s *Server) job(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	j, err := s.cfg.Jobs.Get(r.Context(), id)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	jd := jobData{Job: j, Progress: progressOf(j, s.cfg.Now()), Filters: deviceJobStatuses}
	for _, f := range deviceJobStatuses {
		if q.Get("outcome") == f {
			jd.Filter = f
		}
	}
	jd.CanSteer = jd.Progress.Cancellable && c.policy.Require(httpapi.JobRights(j.Type), "") == nil
	switch {
	case j.CloudToDeviceMethod != nil:
		jd.Request = prettyJSON(j.CloudToDeviceMethod)
	case j.UpdateTwin != nil:
		jd.Request = prettyJSON(j.UpdateTwin)
	}
	text := "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = " + quote(id)
	if jd.Filter != "" {
		text += " AND devices.jobs.status = " + quote(jd.Filter)
	}
	res, err := s.cfg.Query.Run(r.Context(), text, deviceJobPage, q.Get("c"))
	if err != nil {
		return err
	}
	for _, it := range res.Items {
		if dj, ok := it.(*herd.DeviceJob); ok {
			jd.Rows = append(jd.Rows, dj)
		}
	}
	base := "/ui/jobs/" + pathEscape(id) + "?" + url.Values{"outcome": {jd.Filter}}.Encode()
	if res.Continuation != "" {
		jd.Next = base + "&" + url.Values{"c": {res.Continuation}}.Encode() + "#devices"
	}
	if q.Get("c") != "" {
		jd.First = base + "#devices"
	}
	d := s.data(r, c, "Job "+id)
	d.Body = jd
	s.render(w, http.StatusOK, "job", d)
	return nil
}

// pauseJob and resumeJob pause and resume a job (POST
// /jobs/v2/{id}/pause, /resume: the rights of creating it).
func (s *Server) pauseJob(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	if _, err := s.cfg.Jobs.Pause(r.Context(), id, allow(c.policy, "pausing")); err != nil {
		return err
	}
	s.redirect(w, r, c, "/ui/jobs/"+pathEscape(id), "Job paused: no more devices start; calls in flight finish.")
	return nil
}

func (s *Server) resumeJob(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	if _, err := s.cfg.Jobs.Resume(r.Context(), id, allow(c.policy, "resuming")); err != nil {
		return err
	}
	s.redirect(w, r, c, "/ui/jobs/"+pathEscape(id), "Job resumed.")
	return nil
}

// cancelJob cancels a job (POST /jobs/v2/{id}/cancel: the rights of
// creating it).
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	if _, err := s.cfg.Jobs.Cancel(r.Context(), id, allow(c.policy, "cancelling")); err != nil {
		return err
	}
	s.redirect(w, r, c, "/ui/jobs/"+pathEscape(id), "Job cancelled: pending devices were canceled; devices already running finish.")
	return nil
}

// jobForm is what the new-job form and the devices page's bulk action
// send, as typed.
type jobForm struct {
	JobID, Type, Target, Condition  string
	Tags, Desired                   string
	MethodName, Payload             string
	ResponseTimeout, ConnectTimeout string
	// StartTime is UTC, as an <input type=datetime-local> writes it
	// (2026-11-27T02:00, with :05 seconds when given) or RFC 3339; empty
	// means now.
	StartTime    string
	MaxExecution string
	// Rollout controls (the job's herd member): devices a minute, waves
	// as cumulative percentages ("1,10,100"), pause between waves ("on"),
	// and an abort when failures reach a share of the devices executed.
	Rate, Waves, PauseWaves, AbortPercent, AbortMin string
	// Retries of a method job's devices that were not online: attempts
	// at most, and the wait before the first retry in seconds.
	RetryOffline, RetryBackoff string
	// Continuous ("on") keeps the job running until its deadline for
	// devices that start matching later.
	Continuous string
}

func readJobForm(r *http.Request) jobForm {
	v := func(k string) string { return strings.TrimSpace(r.FormValue(k)) }
	return jobForm{JobID: v("jobId"), Type: v("type"), Target: v("target"), Condition: v("condition"),
		Tags: v("tags"), Desired: v("desired"), MethodName: v("methodName"), Payload: v("payload"),
		ResponseTimeout: v("responseTimeout"), ConnectTimeout: v("connectTimeout"),
		StartTime: v("startTime"), MaxExecution: v("maxExecution"),
		Rate: v("rate"), Waves: v("waves"), PauseWaves: v("pauseWaves"), AbortPercent: v("abortPercent"), AbortMin: v("abortMin"),
		RetryOffline: v("retryOffline"), RetryBackoff: v("retryBackoff"), Continuous: v("continuous")}
}

// values is the form as a query string (to edit it again).
func (f jobForm) values() url.Values {
	out := url.Values{}
	for k, v := range map[string]string{"jobId": f.JobID, "type": f.Type, "target": f.Target, "condition": f.Condition,
		"tags": f.Tags, "desired": f.Desired, "methodName": f.MethodName, "payload": f.Payload,
		"responseTimeout": f.ResponseTimeout, "connectTimeout": f.ConnectTimeout, "startTime": f.StartTime, "maxExecution": f.MaxExecution,
		"rate": f.Rate, "waves": f.Waves, "pauseWaves": f.PauseWaves, "abortPercent": f.AbortPercent, "abortMin": f.AbortMin,
		"retryOffline": f.RetryOffline, "retryBackoff": f.RetryBackoff, "continuous": f.Continuous} {
		if v != "" {
			out.Set(k, v)
		}
	}
	return out
}

// body builds the job's PUT /jobs/v2/{id} body; the job service
// validates it as it validates the API's.
func (f jobForm) body(selected []string, now time.Time) (string, []byte, error) {
	bad := func(format string, args ...any) (string, []byte, error) {
		return "", nil, herd.Errorf(herd.ErrArgumentInvalid, format, args...)
	}
	id := f.JobID
	if id == "" {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		id = "ui-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
	}
	req := map[string]any{"jobId": id, "type": f.Type}
	switch f.Target {
	case "selection":
		if len(selected) == 0 {
			return bad("no devices are selected: tick devices on the Devices page, or choose every device matching the query")
		}
		req["queryCondition"] = selectionCondition(selected)
	default:
		req["queryCondition"] = condition(f.Condition)
	}
	object := func(name, text string) (json.RawMessage, error) {
		var m map[string]any
		if json.Unmarshal([]byte(text), &m) != nil || m == nil {
			return nil, herd.Errorf(herd.ErrArgumentInvalid, "%s must be a JSON object, such as {\"floor\": 3}", name)
		}
		return json.RawMessage(text), nil
	}
	switch herd.JobType(f.Type) {
	case herd.JobUpdateTwin:
		up := map[string]any{"etag": "*"}
		if f.Tags != "" {
			t, err := object("Tags", f.Tags)
			if err != nil {
				return "", nil, err
			}
			up["tags"] = t
		}
		if f.Desired != "" {
			d, err := object("Desired properties", f.Desired)
			if err != nil {
				return "", nil, err
			}
			up["properties"] = map[string]any{"desired": d}
		}
		req["updateTwin"] = up
	case herd.JobDeviceMethod:
		m := map[string]any{"methodName": f.MethodName}
		if f.Payload != "" {
			if !json.Valid([]byte(f.Payload)) {
				return bad("the payload is not valid JSON")
			}
			m["payload"] = json.RawMessage(f.Payload)
		}
		for name, v := range map[string]string{"responseTimeoutInSeconds": f.ResponseTimeout, "connectTimeoutInSeconds": f.ConnectTimeout} {
			if v == "" {
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return bad("%s must be a whole number of seconds", name)
			}
			m[name] = n
		}
		req["cloudToDeviceMethod"] = m
	default:
		return bad("choose what the job does: a direct method or a twin update")
	}
	if f.StartTime != "" {
		var t time.Time
		var err error
		for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339} {
			if t, err = time.Parse(layout, f.StartTime); err == nil {
				break
			}
		}
		if err != nil {
			return bad("the start time %q is not a date and time (UTC)", f.StartTime)
		}
		req["startTime"] = t.UTC().Format(time.RFC3339)
	}
	if f.MaxExecution != "" {
		n, err := strconv.Atoi(f.MaxExecution)
		if err != nil {
			return bad("the deadline must be a whole number of seconds")
		}
		req["maxExecutionTimeInSeconds"] = n
	}
	opts, err := f.herdOptions()
	if err != nil {
		return "", nil, err
	}
	if opts != nil {
		req["herd"] = opts
	}
	b, err := json.Marshal(req)
	return id, b, err
}

// herdOptions builds the job's herd member from the rollout controls (nil
// when none is set); the job service checks the figures.
func (f jobForm) herdOptions() (*herd.JobOptions, error) {
	bad := func(format string, args ...any) error { return herd.Errorf(herd.ErrArgumentInvalid, format, args...) }
	var o herd.JobOptions
	if f.Rate != "" || f.Waves != "" || f.PauseWaves != "" {
		o.Rollout = &herd.Rollout{PauseBetweenWaves: f.PauseWaves != ""}
		if f.Rate != "" {
			n, err := strconv.ParseInt(f.Rate, 10, 64)
			if err != nil {
				return nil, bad("the rate must be a whole number of devices a minute")
			}
			o.Rollout.MaxPerMinute = n
		}
		for _, w := range strings.Split(f.Waves, ",") {
			if w = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(w), "%")); w == "" {
				continue
			}
			p, err := strconv.ParseFloat(w, 64)
			if err != nil {
				return nil, bad("the waves must be percentages separated by commas, such as 1, 10, 100")
			}
			o.Rollout.Waves = append(o.Rollout.Waves, herd.Wave{Percent: p})
		}
	}
	if f.AbortPercent != "" {
		p, err := strconv.ParseFloat(strings.TrimSuffix(f.AbortPercent, "%"), 64)
		if err != nil {
			return nil, bad("the abort threshold must be a percentage")
		}
		c := herd.AbortCriterion{FailureType: herd.FailureAny, ThresholdPercentage: p, MinExecutedDevices: 1}
		if f.AbortMin != "" {
			if c.MinExecutedDevices, err = strconv.ParseInt(f.AbortMin, 10, 64); err != nil {
				return nil, bad("the devices executed before an abort must be a whole number")
			}
		}
		o.Abort = &herd.AbortPolicy{Criteria: []herd.AbortCriterion{c}}
	}
	if f.RetryOffline != "" || f.RetryBackoff != "" {
		if f.RetryOffline == "" {
			return nil, bad("the wait before a retry needs the attempts at most")
		}
		n, err := strconv.Atoi(f.RetryOffline)
		if err != nil {
			return nil, bad("the attempts at most must be a whole number")
		}
		o.Retry = &herd.RetryPolicy{Criteria: []herd.RetryCriterion{{FailureType: herd.FailureNotOnline, MaxAttempts: n}}}
		if f.RetryBackoff != "" {
			if o.Retry.BackoffSeconds, err = strconv.ParseFloat(f.RetryBackoff, 64); err != nil || o.Retry.BackoffSeconds == 0 {
				return nil, bad("the wait before the first retry must be a number of seconds from 1")
			}
		}
	}
	o.Continuous = f.Continuous != ""
	if o.Rollout == nil && o.Abort == nil && o.Retry == nil && !o.Continuous {
		return nil, nil
	}
	return &o, nil
}

// newJobData is the new-job page's.
type newJobData struct {
	Form      jobForm
	Selected  int
	FormError string
}

func (s *Server) newJob(w http.ResponseWriter, r *http.Request, c *call) error {
	f := readJobForm(r)
	if f.Type == "" {
		f.Type = string(herd.JobDeviceMethod)
		if !c.policy.Rights.Any(auth.ServiceConnect) {
			f.Type = string(herd.JobUpdateTwin)
		}
	}
	if f.MaxExecution == "" {
		f.MaxExecution = strconv.Itoa(job.DefaultMaxExecution)
	}
	d := s.data(r, c, "New job")
	d.Body = newJobData{Form: f, Selected: len(c.sess.selected())}
	s.render(w, http.StatusOK, "newjob", d)
	return nil
}

// previewData is the preview page's: what the job would do, and the
// exact body that "Schedule" creates.
type previewData struct {
	Preview *job.Preview
	JobID   string
	Body    string
	MAC     string
	Request string
	EditURL string
}

// previewJob shows what a job would do before it is scheduled (POST
// /jobs/v2/preview). The page's Schedule button sends back the previewed
// body with a MAC over it, so that what is scheduled is exactly what was
// previewed.
func (s *Server) previewJob(w http.ResponseWriter, r *http.Request, c *call) error {
	f := readJobForm(r)
	id, body, err := f.body(c.sess.selected(), s.cfg.Now())
	var p *job.Preview
	if err == nil {
		p, err = s.cfg.Jobs.Preview(r.Context(), body, job.DefaultPreviewSample, allow(c.policy, "creating"))
	}
	if err != nil {
		if herd.ErrorCodeOf(err) == herd.ErrInternal || herd.IsCode(err, herd.ErrUnauthorized) {
			return err
		}
		d := s.data(r, c, "New job")
		d.Body = newJobData{Form: f, Selected: len(c.sess.selected()), FormError: herd.ErrorMessage(err)}
		s.render(w, http.StatusBadRequest, "newjob", d)
		return nil
	}
	var req map[string]json.RawMessage
	_ = json.Unmarshal(body, &req)
	work := req["cloudToDeviceMethod"]
	if work == nil {
		work = req["updateTwin"]
	}
	d := s.data(r, c, "Preview")
	d.Body = previewData{Preview: p, JobID: id, Body: string(body), MAC: s.mac(c.sess, id, body),
		Request: prettyJSON(work), EditURL: "/ui/jobs/new?" + f.values().Encode()}
	s.render(w, http.StatusOK, "preview", d)
	return nil
}

// createJob schedules a previewed job (PUT /jobs/v2/{id}).
func (s *Server) createJob(w http.ResponseWriter, r *http.Request, c *call) error {
	id, body := r.PostFormValue("jobId"), []byte(r.PostFormValue("body"))
	if !hmac.Equal([]byte(r.PostFormValue("mac")), []byte(s.mac(c.sess, id, body))) {
		return herd.Errorf(herd.ErrArgumentInvalid, "this job was not previewed in this session: create it from its preview")
	}
	if _, err := s.cfg.Jobs.Create(r.Context(), id, body, allow(c.policy, "creating")); err != nil {
		return err
	}
	s.redirect(w, r, c, "/ui/jobs/"+pathEscape(id), "Job "+id+" scheduled.")
	return nil
}

// mac signs a previewed job for the session.
func (s *Server) mac(sess *session, id string, body []byte) string {
	m := hmac.New(sha256.New, s.macKey)
	m.Write([]byte(sess.id))
	m.Write([]byte{0})
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
