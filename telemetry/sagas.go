package telemetry

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// SagaCollector exports fleet-wide saga gauges read from the active-saga
// index (redisstore.ActiveKey, scored by deadline) at scrape time:
// ksaga_sagas_in_flight and ksaga_sagas_overdue. Register it in one place
// only (the order function and ksaga dev do), since every process would
// report the same numbers.
type SagaCollector struct {
	Redis     redis.UniversalClient
	Key       string        // the index key
	Retention time.Duration // index entries older than deadline+Retention belong to expired sagas and are pruned
	Logger    *slog.Logger
	Now       func() time.Time

	inFlight, overdue *prometheus.Desc
}

// NewSagaCollector returns a collector over the index at key.
func NewSagaCollector(rdb redis.UniversalClient, key string, retention time.Duration, logger *slog.Logger) *SagaCollector {
	return &SagaCollector{Redis: rdb, Key: key, Retention: retention, Logger: logger, Now: time.Now,
		inFlight: prometheus.NewDesc("ksaga_sagas_in_flight", "Sagas started and not yet finished (completed, compensated or compensation_failed).", nil, nil),
		overdue:  prometheus.NewDesc("ksaga_sagas_overdue", "Unfinished sagas past their deadline: running ones until the deadline sweeper aborts them, then compensations that do not finish.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *SagaCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.inFlight; ch <- c.overdue }

// Collect implements prometheus.Collector.
func (c *SagaCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	now := c.Now().UnixMilli()
	pipe := c.Redis.TxPipeline() // MULTI: both gauges from one moment
	pipe.ZRemRangeByScore(ctx, c.Key, "-inf", "("+strconv.FormatInt(now-c.Retention.Milliseconds(), 10))
	card := pipe.ZCard(ctx, c.Key)
	late := pipe.ZCount(ctx, c.Key, "-inf", "("+strconv.FormatInt(now, 10))
	if _, err := pipe.Exec(ctx); err != nil {
		c.Logger.Warn("saga gauges", "error", err.Error())
		return
	}
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(card.Val()))
	ch <- prometheus.MustNewConstMetric(c.overdue, prometheus.GaugeValue, float64(late.Val()))
}
