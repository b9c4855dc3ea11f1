package telemetry

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ksaga/ksaga/saga"
)

// SagaCollector exports fleet-wide saga gauges read from the saga store's
// indexes at scrape time, per saga definition: ksaga_sagas_in_flight,
// ksaga_sagas_overdue and ksaga_sagas_by_status. Register it in one place
// only (the console function and ksaga dev do), since every process would
// report the same numbers.
type SagaCollector struct {
	store  saga.Store
	sagas  func(ctx context.Context) ([]string, error)
	logger *slog.Logger
	now    func() time.Time

	inFlight, overdue, byStatus *prometheus.Desc
}

// NewSagaCollector returns a collector of the definitions sagas lists.
func NewSagaCollector(store saga.Store, sagas func(ctx context.Context) ([]string, error), logger *slog.Logger) *SagaCollector {
	return &SagaCollector{store: store, sagas: sagas, logger: logger, now: time.Now,
		inFlight: prometheus.NewDesc("ksaga_sagas_in_flight", "Sagas started and not yet finished (accepted, running or compensating).", []string{"saga"}, nil),
		overdue:  prometheus.NewDesc("ksaga_sagas_overdue", "Unfinished sagas past their due time: running ones until the deadline sweeper aborts them, then compensations that do not finish.", []string{"saga"}, nil),
		byStatus: prometheus.NewDesc("ksaga_sagas", "Sagas kept in the store, by status (finished ones until their retention ends).", []string{"saga", "status"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *SagaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inFlight
	ch <- c.overdue
	ch <- c.byStatus
}

// Collect implements prometheus.Collector.
func (c *SagaCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	names, err := c.sagas(ctx)
	if err != nil {
		c.logger.Warn("saga gauges", "error", err.Error())
		return
	}
	for _, n := range names {
		st, err := c.store.Stats(ctx, n, c.now())
		if err != nil {
			c.logger.Warn("saga gauges", "saga", n, "error", err.Error())
			return
		}
		flight := st.ByStatus[saga.StatusAccepted] + st.ByStatus[saga.StatusRunning] + st.ByStatus[saga.StatusCompensating]
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(flight), n)
		ch <- prometheus.MustNewConstMetric(c.overdue, prometheus.GaugeValue, float64(st.Overdue), n)
		for _, s := range saga.Statuses {
			ch <- prometheus.MustNewConstMetric(c.byStatus, prometheus.GaugeValue, float64(st.ByStatus[s]), n, string(s))
		}
	}
}
