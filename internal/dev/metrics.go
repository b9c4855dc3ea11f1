package dev

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/telemetry"
)

// brokerMetrics exports the local broker's counters (docs/observability.md).
// Labels are bounded by the configuration: broker and trigger names, never
// event types (any sender may invent those) and never a broker name an
// unknown path made up.
type brokerMetrics struct {
	events     *prometheus.CounterVec // ksaga_broker_events_total{broker,code}
	deliveries *prometheus.CounterVec // ksaga_broker_deliveries_total{broker,trigger,outcome}
	retries    *prometheus.CounterVec // ksaga_broker_delivery_retries_total{broker,trigger}

	// The counters of the two calls made for every event, by namespace,
	// broker (and trigger).
	received  *telemetry.Children[[2]string, prometheus.Counter]
	delivered *telemetry.Children[[3]string, prometheus.Counter]
}

var _ devbroker.Observer = (*brokerMetrics)(nil)

func newBrokerMetrics(reg prometheus.Registerer) *brokerMetrics {
	m := &brokerMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ksaga_broker_events_total",
			Help: "Events the local broker's ingress answered, by code (202 stored; 400, 404, 413, 503 refused); replies published back count as 202.",
		}, []string{"broker", "code"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ksaga_broker_deliveries_total",
			Help: "Deliveries to Trigger subscribers, by outcome: delivered, dead_lettered, dropped (no dead-letter sink, or it failed too).",
		}, []string{"broker", "trigger", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ksaga_broker_delivery_retries_total",
			Help: "Retried delivery attempts (after 5xx, 404, 408, 409, 429, transport errors or a 2xx that is not an event).",
		}, []string{"broker", "trigger"}),
	}
	m.received = telemetry.NewChildren(func(k [2]string) prometheus.Counter {
		return m.events.WithLabelValues(k[0]+"/"+k[1], "202")
	})
	m.delivered = telemetry.NewChildren(func(k [3]string) prometheus.Counter {
		return m.deliveries.WithLabelValues(k[0]+"/"+k[1], k[2], "delivered")
	})
	reg.MustRegister(m.events, m.deliveries, m.retries)
	return m
}

func brokerLabel(l devbroker.Labels) string { return l.Namespace + "/" + l.Broker }

// Received implements devbroker.Observer.
func (m *brokerMetrics) Received(l devbroker.Labels) {
	m.received.Get([2]string{l.Namespace, l.Broker}).Inc()
}

// Rejected implements devbroker.Observer.
func (m *brokerMetrics) Rejected(l devbroker.Labels, code int) {
	b := brokerLabel(l)
	if code == 404 {
		b = "unknown"
	}
	m.events.WithLabelValues(b, strconv.Itoa(code)).Inc()
}

// Delivered implements devbroker.Observer.
func (m *brokerMetrics) Delivered(l devbroker.Labels, _ int) {
	m.delivered.Get([3]string{l.Namespace, l.Broker, l.Trigger}).Inc()
}

// Retried implements devbroker.Observer.
func (m *brokerMetrics) Retried(l devbroker.Labels, _ int) {
	m.retries.WithLabelValues(brokerLabel(l), l.Trigger).Inc()
}

// DeadLettered implements devbroker.Observer.
func (m *brokerMetrics) DeadLettered(l devbroker.Labels, _ int) {
	m.deliveries.WithLabelValues(brokerLabel(l), l.Trigger, "dead_lettered").Inc()
}

// Dropped implements devbroker.Observer.
func (m *brokerMetrics) Dropped(l devbroker.Labels, _ int) {
	m.deliveries.WithLabelValues(brokerLabel(l), l.Trigger, "dropped").Inc()
}
