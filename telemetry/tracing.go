package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Propagator is W3C Trace Context plus Baggage: the headers Knative's
// data plane forwards (traceparent, tracestate, baggage).
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Inject writes ctx's trace context into outgoing HTTP headers.
func Inject(ctx context.Context, h http.Header) {
	Propagator().Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract returns ctx with the trace context of an incoming request: the
// HTTP headers (what Knative forwards) or, failing that, the event's
// distributed-tracing extension (traceparent/tracestate attributes).
func Extract(ctx context.Context, h http.Header, e *event.Event) context.Context {
	p := Propagator()
	out := p.Extract(ctx, propagation.HeaderCarrier(h))
	if trace.SpanContextFromContext(out).IsValid() || e == nil {
		return out
	}
	return p.Extract(ctx, extensionCarrier{e})
}

// extensionCarrier reads the CloudEvents distributed-tracing extension.
type extensionCarrier struct{ e *event.Event }

func (c extensionCarrier) Get(key string) string {
	v, _ := c.e.Extensions()[strings.ToLower(key)].(string)
	return v
}
func (c extensionCarrier) Set(string, string) {}
func (c extensionCarrier) Keys() []string     { return []string{"traceparent", "tracestate"} }

// Tracing is a tracer provider and how to flush it.
type Tracing struct {
	Provider trace.TracerProvider
	Shutdown func(context.Context) error
	Enabled  bool
}

// NewTracing sets up tracing from the standard OTEL_* variables read with
// getenv: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (a full URL) or
// OTEL_EXPORTER_OTLP_ENDPOINT (+ "/v1/traces"), OTEL_EXPORTER_OTLP_HEADERS,
// OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_EXPORTER (otlp or none); the SDK itself reads
// OTEL_TRACES_SAMPLER and OTEL_BSP_*. The exporter speaks OTLP/HTTP with
// protobuf. Without an endpoint, the provider is a no-op: spans cost
// nothing, but trace context still flows from each request to its reply.
func NewTracing(ctx context.Context, service string, getenv func(string) string, logger *slog.Logger) Tracing {
	off := Tracing{Provider: noop.NewTracerProvider(), Shutdown: func(context.Context) error { return nil }}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" && getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		endpoint = strings.TrimSuffix(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "/") + "/v1/traces"
	}
	switch exp := getenv("OTEL_TRACES_EXPORTER"); {
	case exp == "none" || endpoint == "":
		return off
	case exp != "" && exp != "otlp":
		logger.Warn("tracing off: OTEL_TRACES_EXPORTER supports otlp or none", "value", exp)
		return off
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := getenv(k); v != "" && v != "http/protobuf" {
			logger.Warn("tracing off: only the http/protobuf OTLP protocol is supported (port 4318)", "variable", k, "value", v)
			return off
		}
	}
	if _, err := url.ParseRequestURI(endpoint); err != nil {
		logger.Warn("tracing off: bad OTLP endpoint", "endpoint", endpoint, "error", err.Error())
		return off
	}
	headers := parseHeaders(getenv("OTEL_EXPORTER_OTLP_HEADERS"))
	for k, v := range parseHeaders(getenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS")) {
		headers[k] = v
	}
	timeout := 10 * time.Second
	if ms, err := strconv.Atoi(getenv("OTEL_EXPORTER_OTLP_TIMEOUT")); err == nil && ms > 0 {
		timeout = time.Duration(ms) * time.Millisecond
	}
	if name := getenv("OTEL_SERVICE_NAME"); name != "" {
		service = name
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", service)}
	for k, v := range parseHeaders(getenv("OTEL_RESOURCE_ATTRIBUTES")) {
		if k != "service.name" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	exp := newOTLPExporter(endpoint, headers, timeout)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewWithAttributes("", attrs...)),
	)
	logger.Info("tracing on", "endpoint", endpoint)
	return Tracing{Provider: tp, Shutdown: tp.Shutdown, Enabled: true}
}

// parseHeaders reads "k1=v1,k2=v2" with URL-encoded values (the OTEL_*
// header and resource-attribute format).
func parseHeaders(s string) map[string]string {
	out := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || strings.TrimSpace(k) == "" {
			continue
		}
		if dv, err := url.PathUnescape(strings.TrimSpace(v)); err == nil { // "+" stays "+", as in the OTel SDK
			v = dv
		}
		out[strings.TrimSpace(k)] = v
	}
	return out
}

// describe is a short description of an exporter failure.
func describe(resp *http.Response) string {
	return fmt.Sprintf("OTLP endpoint answered %s", resp.Status)
}
