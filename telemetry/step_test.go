package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ksaga/ksaga/saga"
)

func stepEvent(id, typ string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/test")
	e.SetType(typ)
	e.SetExtension(saga.ExtCorrelationID, "saga-1")
	return &e
}

// serve runs one event through the observer as knfunc's handler does.
func serve(o *StepObserver, e, reply *event.Event, status int) http.Header {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	_, done := o.Start(context.Background(), w, r, e)
	done(reply, status, nil)
	return w.Header()
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// TestStepObserver: each event is counted and timed by type (unknown types
// as "other"), replies by type; with a recording tracer the step's span is
// a child of the request's trace and carries the event's attributes, and
// the response carries the span's context; without one, the request's
// trace context is handed on unchanged.
func TestStepObserver(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	m := NewMetrics()
	o := &StepObserver{Service: "svc", Metrics: m, Tracer: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)).Tracer("t"),
		Known: func(typ string) bool { return typ == "a" }}
	reply := stepEvent("r1", "a.done")
	for i := range 3 {
		serve(o, stepEvent("e"+string(rune('0'+i)), "a"), reply, http.StatusOK)
	}
	h := serve(o, stepEvent("x", "made.up"), nil, http.StatusOK)

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ksaga_step_events_total", map[string]string{"service": "svc", "type": "a", "outcome": "replied"}, 3},
		{"ksaga_step_events_total", map[string]string{"service": "svc", "type": "other", "outcome": "acked"}, 1},
		{"ksaga_step_duration_seconds", map[string]string{"service": "svc", "type": "a"}, 3},
		{"ksaga_step_replies_total", map[string]string{"service": "svc", "type": "a.done"}, 3},
	} {
		if got := counterValue(t, m.Registry, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	spans := exp.GetSpans()
	if len(spans) != 4 {
		t.Fatalf("%d spans, want 4", len(spans))
	}
	attrs := map[string]string{}
	for _, kv := range spans[0].Attributes {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	for k, want := range map[string]string{"cloudevents.event_id": "e0", "cloudevents.event_type": "a", "ksaga.saga_id": "saga-1",
		"ksaga.service": "svc", "ksaga.outcome": "replied", "ksaga.reply_type": "a.done"} {
		if attrs[k] != want {
			t.Errorf("span attribute %s = %q, want %q", k, attrs[k], want)
		}
	}
	if spans[0].Parent.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || spans[3].Name != "ksaga.step other" {
		t.Errorf("spans: parent trace %s, last name %q", spans[0].Parent.TraceID(), spans[3].Name)
	}
	if got, want := h.Get("Traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-"+spans[3].SpanContext.SpanID().String()+"-01"; got != want {
		t.Errorf("response traceparent %q, want %q", got, want)
	}

	quiet := &StepObserver{Service: "svc", Metrics: NewMetrics(), Tracer: tracenoop.NewTracerProvider().Tracer("t")}
	if got := serve(quiet, stepEvent("q", "a"), nil, http.StatusOK).Get("Traceparent"); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("without tracing, response traceparent %q, want the request's", got)
	}
}

// OTEL_* header values are percent-decoded as the OTel SDK does (a path
// unescape): a "+" in a token is a "+", not a space.
func TestParseHeaders(t *testing.T) {
	got := parseHeaders("Authorization=Basic dXNlcjpw+YXNz, x-team = a%20b ,broken")
	if got["Authorization"] != "Basic dXNlcjpw+YXNz" || got["x-team"] != "a b" || len(got) != 2 {
		t.Fatalf("%q", got)
	}
}
