package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
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
// getenv, exporting spans with OpenTelemetry's own OTLP/HTTP exporter
// (otlptracehttp: protobuf, retries with backoff on 429, 502, 503 and 504
// honouring Retry-After, gzip on request). Tracing is on when an endpoint
// is set: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full URL) or
// OTEL_EXPORTER_OTLP_ENDPOINT (a base URL, "/v1/traces" appended), and
// off with OTEL_TRACES_EXPORTER=none or a protocol other than
// http/protobuf (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL). The exporter's
// other variables, each also in an OTEL_EXPORTER_OTLP_TRACES_* form that
// wins, are read through getenv too: OTEL_EXPORTER_OTLP_HEADERS,
// _TIMEOUT (ms), _COMPRESSION (gzip), _INSECURE, _CERTIFICATE,
// _CLIENT_CERTIFICATE and _CLIENT_KEY. OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES name the resource; the SDK itself reads
// OTEL_TRACES_SAMPLER and OTEL_BSP_*. Without an endpoint, the provider is
// a no-op: spans cost nothing, but trace context still flows from each
// request to its reply.
func NewTracing(ctx context.Context, service string, getenv func(string) string, logger *slog.Logger) Tracing {
	off := Tracing{Provider: noop.NewTracerProvider(), Shutdown: func(context.Context) error { return nil }}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" && getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		u, err := url.Parse(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
		if err != nil {
			logger.Warn("tracing off: bad OTLP endpoint", "endpoint", getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "error", err.Error())
			return off
		}
		u.Path = path.Join("/", u.Path, "v1", "traces")
		endpoint = u.String()
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
	if u, err := url.ParseRequestURI(endpoint); err != nil || u.Host == "" {
		logger.Warn("tracing off: bad OTLP endpoint", "endpoint", endpoint, "error", fmt.Sprint(err))
		return off
	}
	opts, err := exporterOptions(endpoint, getenv)
	if err != nil {
		logger.Warn("tracing off", "error", err.Error())
		return off
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		logger.Warn("tracing off: OTLP exporter", "error", err.Error())
		return off
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
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewWithAttributes("", attrs...)),
	)
	logger.Info("tracing on", "endpoint", endpoint)
	return Tracing{Provider: tp, Shutdown: tp.Shutdown, Enabled: true}
}

// exporterOptions turns the exporter's OTEL_EXPORTER_OTLP_* variables, read
// through getenv, into otlptracehttp options, with the exporter's own
// precedence (the TRACES_ form wins) and meaning. The exporter reads the
// same variables from the process environment; reading them through getenv
// keeps NewTracing's contract (a function's run gets its environment as
// getenv) and lets an explicit option win.
func exporterOptions(endpoint string, getenv func(string) string) ([]otlptracehttp.Option, error) {
	get := func(name string) string {
		if v := getenv("OTEL_EXPORTER_OTLP_TRACES_" + name); v != "" {
			return v
		}
		return getenv("OTEL_EXPORTER_OTLP_" + name)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint)} // http:// is insecure, https:// is TLS
	if strings.EqualFold(get("INSECURE"), "true") {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	if v := get("HEADERS"); v != "" {
		opts = append(opts, otlptracehttp.WithHeaders(parseHeaders(v)))
	}
	if v := get("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_TIMEOUT=%q: want milliseconds", v)
		}
		opts = append(opts, otlptracehttp.WithTimeout(time.Duration(ms)*time.Millisecond))
	}
	switch v := get("COMPRESSION"); v {
	case "gzip":
		opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	case "", "none":
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_COMPRESSION=%q: want gzip or none", v)
	}
	var tlsCfg tls.Config
	if f := get("CERTIFICATE"); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_CERTIFICATE: %w", err)
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_CERTIFICATE %s: no PEM certificate", f)
		}
	}
	if cert, key := get("CLIENT_CERTIFICATE"), get("CLIENT_KEY"); cert != "" || key != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{pair}
	}
	if tlsCfg.RootCAs != nil || len(tlsCfg.Certificates) > 0 {
		opts = append(opts, otlptracehttp.WithTLSClientConfig(&tlsCfg))
	}
	return opts, nil
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
