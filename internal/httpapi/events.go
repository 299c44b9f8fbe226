package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/events"
)

// eventBuffer is how many messages a slow monitor may fall behind before
// messages are dropped for it.
const eventBuffer = 1024

// heartbeatEvery keeps idle event streams (and proxies) alive.
const heartbeatEvery = 15 * time.Second

// HandleEvents registers GET /events: the live stream of device-to-cloud
// messages as Server-Sent Events (ServiceConnect), optionally for one
// device (?deviceId=). Each message is one "data:" line with a herd.Event
// JSON; messages lost because the client is slow are announced with a
// "dropped" event.
func (s *Server) HandleEvents(stream *events.Stream) {
	s.Handle("/events", map[string]Endpoint{
		http.MethodGet: {auth.ServiceConnect, func(w http.ResponseWriter, r *http.Request) error {
			return s.serveEvents(w, r, stream)
		}},
	})
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request, stream *events.Stream) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return herd.Errorf(herd.ErrInternal, "streaming is not supported by this connection")
	}
	sub := stream.Subscribe(r.URL.Query().Get("deviceId"), eventBuffer)
	defer sub.Close()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": herd event stream\n\n")
	flusher.Flush()
	beat := time.NewTicker(heartbeatEvery)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-stream.Done():
			return nil
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
		case e := <-sub.C():
			if n := sub.Dropped(); n > 0 {
				fmt.Fprintf(w, "event: dropped\ndata: %d\n\n", n)
			}
			b, err := json.Marshal(e)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return nil
			}
		}
		flusher.Flush()
	}
}
