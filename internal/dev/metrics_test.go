package dev

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ksaga/ksaga/internal/devbroker"
)

// TestBrokerMetricsCount: the remembered counters count every call, per
// broker and trigger, from concurrent goroutines.
func TestBrokerMetricsCount(t *testing.T) {
	m := newBrokerMetrics(prometheus.NewRegistry())
	a := devbroker.Labels{Namespace: "saga", Broker: "default", Trigger: "a", EventType: "x"}
	b := devbroker.Labels{Namespace: "saga", Broker: "default", Trigger: "b", EventType: "y"}
	other := devbroker.Labels{Namespace: "saga", Broker: "kafka", Trigger: "a"}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				m.Received(a)
				m.Delivered(a, 200)
				m.Delivered(b, 202)
				m.Received(other)
			}
		})
	}
	wg.Wait()
	m.Delivered(other, 200)
	for _, c := range []struct {
		got  float64
		want float64
		what string
	}{
		{value(t, m.events.WithLabelValues("saga/default", "202")), 800, "events saga/default"},
		{value(t, m.events.WithLabelValues("saga/kafka", "202")), 800, "events saga/kafka"},
		{value(t, m.deliveries.WithLabelValues("saga/default", "a", "delivered")), 800, "deliveries a"},
		{value(t, m.deliveries.WithLabelValues("saga/default", "b", "delivered")), 800, "deliveries b"},
		{value(t, m.deliveries.WithLabelValues("saga/kafka", "a", "delivered")), 1, "deliveries kafka a"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
