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
}

func newMetrics(reg prometheus.Registerer, b *bus.Bus) *metrics {
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
	}
	if reg != nil {
		reg.MustRegister(m.connects, m.disconnects, m.telemetry, m.telemetryBytes,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herd_mqtt_connected_devices",
				Help: "Devices connected now.",
			}, func() float64 { return float64(b.Connected()) }))
	}
	return m
}
