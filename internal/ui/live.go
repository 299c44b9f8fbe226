package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/herd-iot/herd"
)

// heartbeatEvery keeps idle streams (and proxies) open.
const heartbeatEvery = 15 * time.Second

// telemetryBuffer is how many messages a slow page may fall behind before
// messages are dropped for it (and it is told how many).
const telemetryBuffer = 256

// sse starts a Server-Sent Events response.
func sse(w http.ResponseWriter) (http.Flusher, error) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return nil, herd.Errorf(herd.ErrInternal, "streaming is not supported by this connection")
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	return flusher, nil
}

func writeEvent(w http.ResponseWriter, f http.Flusher, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
	f.Flush()
	return err
}

// jobEvents streams a job's progress to its page: the engine's change
// notifications (job.Service.Follow, as GET /jobs/v2/{id}/events), each
// as the progress the page shows; "end" when the job has ended.
func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request, c *call) error {
	var flusher http.Flusher
	err := s.cfg.Jobs.Follow(r.Context(), r.PathValue("id"), heartbeatEvery, func() error {
		_, err := fmt.Fprint(w, ": keep-alive\n\n")
		flusher.Flush()
		return err
	}, func(j *herd.Job, ended bool) error {
		if flusher == nil {
			var err error
			if flusher, err = sse(w); err != nil {
				return err
			}
		}
		name := "progress"
		if ended {
			name = "end"
		}
		return writeEvent(w, flusher, name, progressOf(j, s.cfg.Now()))
	})
	if flusher == nil {
		return err // before the stream: an error page (unknown job)
	}
	return nil
}

// telemetryEvent is a device-to-cloud message as the pages show it (as
// `herd monitor` prints it).
type telemetryEvent struct {
	Time       string            `json:"time"`
	DeviceID   string            `json:"deviceId"`
	Body       string            `json:"body"`
	Properties map[string]string `json:"properties,omitempty"`
}

func telemetryOf(e *herd.Event) telemetryEvent {
	body := string(e.Body)
	if !json.Valid(e.Body) {
		if utf8.Valid(e.Body) {
			b, _ := json.Marshal(body)
			body = string(b)
		} else {
			body = fmt.Sprintf("(%d bytes of binary)", len(e.Body))
		}
	}
	return telemetryEvent{Time: e.EnqueuedTime.UTC().Format("15:04:05.000"), DeviceID: e.DeviceID, Body: body, Properties: e.Properties}
}

// streamTelemetry streams device-to-cloud messages (one device's, or all
// for ""), as GET /events does.
func (s *Server) streamTelemetry(w http.ResponseWriter, r *http.Request, deviceID string) error {
	if s.cfg.Events == nil {
		return herd.Errorf(herd.ErrNotFound, "this hub has no telemetry stream")
	}
	sub := s.cfg.Events.Subscribe(deviceID, telemetryBuffer)
	defer sub.Close()
	flusher, err := sse(w)
	if err != nil {
		return err
	}
	fmt.Fprint(w, ": herd telemetry\n\n")
	flusher.Flush()
	beat := time.NewTicker(heartbeatEvery)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.cfg.Events.Done():
			return nil
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			flusher.Flush()
		case e := <-sub.C():
			if n := sub.Dropped(); n > 0 {
				if writeEvent(w, flusher, "dropped", n) != nil {
					return nil
				}
			}
			if writeEvent(w, flusher, "message", telemetryOf(e)) != nil {
				return nil
			}
		}
	}
}

func (s *Server) deviceTelemetry(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.streamTelemetry(w, r, r.PathValue("id"))
}

// monitorData is the monitor page's.
type monitorData struct {
	Device string
	Stream string
}

// monitor shows the hub's live telemetry, optionally of one device, as
// `herd monitor` prints it.
func (s *Server) monitor(w http.ResponseWriter, r *http.Request, c *call) error {
	dev := r.URL.Query().Get("device")
	md := monitorData{Device: dev, Stream: "/ui/monitor/events"}
	if dev != "" {
		md.Stream += "?device=" + urlQueryEscape(dev)
	}
	d := s.data(r, c, "Monitor")
	d.Body = md
	s.render(w, http.StatusOK, "monitor", d)
	return nil
}

func (s *Server) monitorEvents(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.streamTelemetry(w, r, r.URL.Query().Get("device"))
}
