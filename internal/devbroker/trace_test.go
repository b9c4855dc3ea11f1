package devbroker_test

import (
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
)

// TestDeliverySpans: with a TracerProvider, each delivery is a client span
// whose parent is the producer's trace context and whose own context is
// what the subscriber receives: the broker shows up in the saga's trace.
func TestDeliverySpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	e := newEnv(t)
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("svc", onType("order"))})
	cfg.TracerProvider = tp
	e.start(cfg)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.post("/"+ns+"/"+brokerName, newEvent("order"), false, http.Header{"Traceparent": {parent}})
	got := e.sink.wait(t, "/svc", 1)[0].Header.Get("Traceparent")
	// The span ends once the delivery has the subscriber's answer, a
	// moment after the subscriber recorded the request.
	eventually(t, "the delivery span", func() bool { return len(exp.GetSpans()) > 0 })
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("span %s trace %s parent %s", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
	}
	if !strings.Contains(got, s.SpanContext.SpanID().String()) {
		t.Fatalf("subscriber got traceparent %q, want the delivery span %s", got, s.SpanContext.SpanID())
	}
}
