package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-iot/herd/internal/bus"
)

// metrics are the gateway's Prometheus collectors.
type metrics struct {
	connects       *prometheus.CounterVec
	disconnects    *prometheus.CounterVec
	telemetry      prometheus.Counter
	telemetryBytes prometheus.Counter
	overCapacity   prometheus.Counter
	acceptErrors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, b *bus.Bus, sockets func() int) *metrics {
	m := &metrics{
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_mqtt_connects_total",
			Help: "MQTT CONNECTs by result (accepted or refused).",
		}, []string{"result"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_mqtt_disconnects_total",
			Help: "Ended device connections by reason.",
		}, []string{"reason"}),
		telemetry: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_telemetry_messages_total",
			Help: "Device-to-cloud messages received.",
		}),
		telemetryBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_telemetry_bytes_total",
			Help: "Bytes of device-to-cloud message bodies received.",
		}),
		overCapacity: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_mqtt_over_capacity_total",
			Help: "Device sockets refused because --max-connections were open (answered CONNACK 3, or closed).",
		}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_mqtt_accept_errors_total",
			Help: "Failed accepts of device connections that were retried (out of file descriptors or buffers).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connects, m.disconnects, m.telemetry, m.telemetryBytes, m.overCapacity, m.acceptErrors,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herd_mqtt_connected_devices",
				Help: "Devices connected now.",
			}, func() float64 { return float64(b.Connected()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herd_mqtt_open_sockets",
				Help: "Device sockets open now (TCP, TLS and WebSocket, before and after CONNECT), the number --max-connections bounds.",
			}, func() float64 { return float64(sockets()) }))
	}
	return m
}
