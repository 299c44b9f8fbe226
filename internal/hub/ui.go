package hub

import (
	"net"
	"net/http"

	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/ui"
)

// newDashboard builds the operator dashboard (internal/ui) over the hub's
// services; Run mounts it at /ui/.
func (h *Hub) newDashboard(cfg Config) (*ui.Server, error) {
	return ui.New(ui.Config{
		Auth: h.Auth, Registry: h.Registry, Twins: h.Twins, Query: query.NewService(h.Store),
		Jobs: h.Jobs, Methods: h.Methods, Events: h.Events, Connected: h.connectedDevices,
		DeviceGateway: h.deviceGateway, Log: cfg.Log, Now: cfg.Now,
	})
}

// withDashboard serves the dashboard at /ui/ and sends browsers that ask
// for "/" there; everything else goes to api (the REST API keeps its own
// answer for "/", a 404, for API clients).
func (h *Hub) withDashboard(mux *http.ServeMux, api http.Handler) {
	mux.Handle(ui.Prefix, h.ui.Handler())
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ui.RedirectRoot(w, r) {
			api.ServeHTTP(w, r)
		}
	}))
}

// deviceGateway is the GatewayHostName a device connection string needs
// (herd connection-string --device adds the same): the host name and the
// MQTT port, unless MQTT is off or on 8883.
func (h *Hub) deviceGateway() string {
	a := h.MQTTAddr()
	if a == nil {
		return ""
	}
	_, port, _ := net.SplitHostPort(a.String())
	if port == "8883" {
		return ""
	}
	return net.JoinHostPort(h.cfg.Hostname, port)
}

// DashboardURL is the dashboard's address, as `herd serve` prints it.
func (h *Hub) DashboardURL() string {
	_, port, _ := net.SplitHostPort(h.HTTPSAddr().String())
	host := h.cfg.Hostname
	if port != "443" {
		host = net.JoinHostPort(host, port)
	}
	return "https://" + host + ui.Prefix
}
