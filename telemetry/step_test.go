package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

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

// Spans carry OTLP's flags (the W3C trace flags, and whether the parent came
// from another hop: 0x100 known, 0x200 remote) and the dropped counts, as
// the official exporter encodes them.
func TestOTLPFlagsAndDroppedCounts(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
		sdktrace.WithRawSpanLimits(sdktrace.SpanLimits{EventCountLimit: 1, LinkCountLimit: 1, AttributeCountLimit: 8, AttributeValueLengthLimit: -1,
			AttributePerEventCountLimit: 1, AttributePerLinkCountLimit: 1}))
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), remote)
	ctx, step := tp.Tracer("t").Start(ctx, "step", trace.WithLinks(
		trace.Link{SpanContext: remote},
		trace.Link{SpanContext: remote, Attributes: []attribute.KeyValue{attribute.Int("a", 1), attribute.Int("b", 2)}}))
	step.AddEvent("e1") // the limits keep the newest event and link
	step.AddEvent("e2", trace.WithAttributes(attribute.Int("a", 1), attribute.Int("b", 2)))
	_, child := tp.Tracer("t").Start(ctx, "child")
	child.End()
	step.End()

	spans := tracesData(rec.Ended()).ResourceSpans[0].ScopeSpans[0].Spans
	byName := map[string]*tracepb.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	s, c := byName["step"], byName["child"]
	if s.Flags != 0x301 || c.Flags != 0x101 {
		t.Errorf("flags: step %#x (remote parent), child %#x (local parent)", s.Flags, c.Flags)
	}
	if s.DroppedEventsCount != 1 || s.DroppedLinksCount != 1 || len(s.Events) != 1 || s.Events[0].DroppedAttributesCount != 1 ||
		len(s.Links) != 1 || s.Links[0].DroppedAttributesCount != 1 || s.Links[0].Flags != 0x301 {
		t.Errorf("dropped: events %d, links %d, event attrs %d, link attrs %d, link flags %#x", s.DroppedEventsCount, s.DroppedLinksCount,
			s.Events[0].DroppedAttributesCount, s.Links[0].DroppedAttributesCount, s.Links[0].Flags)
	}
}
