package telemetry

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are a function's Prometheus metrics (docs/observability.md). Label
// values are bounded: event types are the step's own (others count as
// "other"), never a saga id.
type Metrics struct {
	Registry *prometheus.Registry

	events   *prometheus.CounterVec   // ksaga_step_events_total{service,type,outcome}
	replies  *prometheus.CounterVec   // ksaga_step_replies_total{service,type}
	errors   *prometheus.CounterVec   // ksaga_step_errors_total{service,class}
	sagas    *prometheus.CounterVec   // ksaga_sagas_total{service,status}
	duration *prometheus.HistogramVec // ksaga_step_duration_seconds{service,type}

	// The children every event touches (StepObserver), by label values.
	stepEvents   *Children[[3]string, prometheus.Counter]  // events{service,type,outcome}
	stepDuration *Children[[2]string, prometheus.Observer] // duration{service,type}
	stepReplies  *Children[[2]string, prometheus.Counter]  // replies{service,type}
}

// DurationBuckets suit steps that take about a millisecond when healthy.
var DurationBuckets = []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewMetrics returns a function's metrics on a fresh registry, with Go
// runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ksaga_step_events_total",
			Help: "CloudEvents a step received, by type and outcome (applied, business_failure, duplicate, stale, refused, replied, acked, invalid, transient, internal).",
		}, []string{"service", "type", "outcome"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ksaga_step_replies_total",
			Help: "Reply events a step answered with, by reply type.",
		}, []string{"service", "type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ksaga_step_errors_total",
			Help: "Events a step did not complete normally, by class: bad_input (400/413), transient (503), internal (500), business (a failure event).",
		}, []string{"service", "class"}),
		sagas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ksaga_sagas_total",
			Help: "Sagas that started (running) or ended (completed, compensated, compensation_failed) with a transition of this service.",
		}, []string{"service", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ksaga_step_duration_seconds",
			Help:    "Time to handle one event, decode to reply.",
			Buckets: DurationBuckets,
		}, []string{"service", "type"}),
	}
	m.stepEvents = NewChildren(func(k [3]string) prometheus.Counter { return m.events.WithLabelValues(k[:]...) })
	m.stepDuration = NewChildren(func(k [2]string) prometheus.Observer { return m.duration.WithLabelValues(k[:]...) })
	m.stepReplies = NewChildren(func(k [2]string) prometheus.Counter { return m.replies.WithLabelValues(k[:]...) })
	m.Registry.MustRegister(m.events, m.replies, m.errors, m.sagas, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
