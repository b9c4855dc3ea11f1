package devscale

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus series of every service's autoscaling
// (docs/observability.md); the service label is "<namespace>/<name>".
type Metrics struct {
	desired, ready, active, held *prometheus.GaugeVec
	activations                  *prometheus.CounterVec
	holdSeconds, activationTime  *prometheus.HistogramVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	label := []string{"service"}
	m := &Metrics{
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ksaga_dev_replicas_desired",
			Help: "Replicas the autoscaler asks for (starting or ready), by Knative Service."}, label),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ksaga_dev_replicas_ready",
			Help: "Replicas ready and taking requests (the actual scale), by Knative Service."}, label),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ksaga_dev_requests_active",
			Help: "Requests in flight or held, from the ingress and the broker, by Knative Service."}, label),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ksaga_dev_requests_held",
			Help: "Requests held now: no ready replica, or every one at its containerConcurrency."}, label),
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ksaga_dev_activations_total",
			Help: "Scale-ups from zero replicas."}, label),
		holdSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ksaga_dev_request_hold_seconds",
			Help:    "How long held requests waited for a replica (activation or capacity); requests that got one at once are not observed.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, label),
		activationTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ksaga_dev_activation_seconds",
			Help:    "Activations: from the decision to scale from zero to the first ready replica.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, label),
	}
	reg.MustRegister(m.desired, m.ready, m.active, m.held, m.activations, m.holdSeconds, m.activationTime)
	return m
}

// serviceMetrics are one service's children; a nil one records nothing.
type serviceMetrics struct {
	desiredG, readyG, activeG, heldG prometheus.Gauge
	activations                      prometheus.Counter
	holdSeconds, activationSeconds   prometheus.Observer
}

func (m *Metrics) forService(svc string) *serviceMetrics {
	if m == nil {
		return nil
	}
	return &serviceMetrics{
		desiredG: m.desired.WithLabelValues(svc), readyG: m.ready.WithLabelValues(svc),
		activeG: m.active.WithLabelValues(svc), heldG: m.held.WithLabelValues(svc),
		activations: m.activations.WithLabelValues(svc),
		holdSeconds: m.holdSeconds.WithLabelValues(svc), activationSeconds: m.activationTime.WithLabelValues(svc),
	}
}

func (m *serviceMetrics) held(d time.Duration) {
	if m != nil {
		m.holdSeconds.Observe(d.Seconds())
	}
}

func (m *serviceMetrics) activated() {
	if m != nil {
		m.activations.Inc()
	}
}

func (m *serviceMetrics) activationTime(d time.Duration) {
	if m != nil {
		m.activationSeconds.Observe(d.Seconds())
	}
}

func (m *serviceMetrics) desired(n int32) {
	if m != nil {
		m.desiredG.Set(float64(n))
	}
}

func (m *serviceMetrics) update(desired int32, st PoolStatus) {
	if m == nil {
		return
	}
	m.desiredG.Set(float64(desired))
	m.readyG.Set(float64(st.Ready))
	m.activeG.Set(float64(st.Active))
	m.heldG.Set(float64(st.Held))
}
