package telemetry_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/internal/otlptest"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
	"github.com/ksaga/ksaga/telemetry"
)

var quiet = slog.New(slog.DiscardHandler)

func TestNewTracingFromEnv(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "zipkin"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_CERTIFICATE": "/no/such/file.pem"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, false},
	}
	for _, tt := range tests {
		tr := telemetry.NewTracing(context.Background(), "svc", func(k string) string { return tt.env[k] }, quiet)
		if tr.Enabled != tt.want {
			t.Errorf("%v: enabled %v, want %v", tt.env, tr.Enabled, tt.want)
		}
		_ = tr.Shutdown(context.Background())
	}
	// The base endpoint's path is kept, "/v1/traces" appended; the
	// per-signal endpoint is used as it is.
	for env, want := range map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://collector:4318/otlp/v1/traces",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/otlp",
	} {
		var log bytes.Buffer
		tr := telemetry.NewTracing(context.Background(), "svc", func(k string) string {
			return map[string]string{env: "http://collector:4318/otlp"}[k]
		}, slog.New(slog.NewTextHandler(&log, nil)))
		_ = tr.Shutdown(context.Background())
		if !strings.Contains(log.String(), "endpoint="+want) {
			t.Errorf("%s: %s, want endpoint %s", env, log.String(), want)
		}
	}
}

// TestExporterRetriesCompressesAndSendsHeaders (issue 19 C): spans go out
// through OpenTelemetry's own OTLP/HTTP exporter, configured from the
// OTEL_EXPORTER_OTLP_* variables read with getenv: a 503 from the
// collector is retried (after its Retry-After), the body is gzip when
// asked, the headers are sent.
func TestExporterRetriesCompressesAndSendsHeaders(t *testing.T) {
	rcv := otlptest.Start(t)
	rcv.Refuse(1, http.StatusServiceUnavailable, "1")
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rcv.URL + "/v1/traces",
		"OTEL_EXPORTER_OTLP_HEADERS":         "authorization=Bearer%20t0ken,x-team=ksaga",
		"OTEL_EXPORTER_OTLP_COMPRESSION":     "gzip",
		"OTEL_SERVICE_NAME":                  "exporter-test",
	}
	tr := telemetry.NewTracing(context.Background(), "svc", func(k string) string { return env[k] }, quiet)
	if !tr.Enabled {
		t.Fatal("tracing off")
	}
	_, span := tr.Provider.Tracer("test").Start(context.Background(), "one")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	spans := rcv.Spans()
	if len(spans) != 1 || spans[0].Name != "one" || spans[0].Service != "exporter-test" {
		t.Fatalf("received %+v, want the one span", spans)
	}
	reqs := rcv.Requests()
	if len(reqs) != 2 || reqs[0].Status != http.StatusServiceUnavailable || reqs[1].Status != http.StatusOK {
		t.Fatalf("requests %+v, want a refused one, then the retry", reqs)
	}
	h := reqs[1].Header
	if h.Get("Content-Encoding") != "gzip" || h.Get("Authorization") != "Bearer t0ken" || h.Get("X-Team") != "ksaga" {
		t.Errorf("export headers %v: want gzip and the OTEL_EXPORTER_OTLP_HEADERS", h)
	}
}

// testSaga is a two-step saga: start (undone by undo), then finish.
var testSaga = &saga.Definition{Name: "test", Timeout: saga.Duration(time.Minute), Steps: []saga.StepDef{
	{Name: "start", Command: "io.ksaga.test.start", Succeeded: "io.ksaga.test.started", Compensation: "io.ksaga.test.undo", Compensated: "io.ksaga.test.undone"},
	{Name: "finish", Command: "io.ksaga.test.finish", Succeeded: "io.ksaga.test.finished", Failed: "io.ksaga.test.failed"},
}}

// participantSetup serves both steps of testSaga.
func participantSetup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	return env.Step(testSaga, saga.Actions{
		"io.ksaga.test.start": func(context.Context, saga.Input) (saga.Transition, error) {
			return saga.Transition{Outcome: "started", Data: map[string]int{"n": 1}}, nil
		},
		"io.ksaga.test.finish": func(context.Context, saga.Input) (saga.Transition, error) {
			return saga.Transition{Outcome: "done"}, nil
		},
	})
}

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// post sends e with header and returns the answer and its headers.
func post(t *testing.T, url string, e event.Event, header http.Header) (sagatest.Response, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	r := sagatest.PostRequest(t, req, e, header)
	return r, r.Header
}

func TestStepTracesAndMetrics(t *testing.T) {
	url, _ := sagatest.RedisURL(t)
	rcv := otlptest.Start(t)
	f := sagatest.Start(t, participantSetup, map[string]string{"REDIS_URL": url, "K_SERVICE": "tracer", "OTEL_EXPORTER_OTLP_ENDPOINT": rcv.URL})

	start := sagatest.Event("e1", "io.ksaga.test.start", map[string]int{"n": 1}, saga.ExtCorrelationID, "s1")
	r1, hdr := post(t, f.URL, start, http.Header{"Traceparent": {parent}})
	if r1.Reply == nil {
		t.Fatalf("%d %s", r1.Status, r1.Body)
	}
	if !strings.HasPrefix(hdr.Get("Traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-") || hdr.Get("Traceparent") == parent {
		t.Fatalf("response traceparent %q: want the same trace, the step's own span", hdr.Get("Traceparent"))
	}
	started := *r1.Reply
	forged := started.Clone()
	forged.SetID("forged")
	post(t, f.URL, forged, nil)                                                                      // 400: refused, a security event
	post(t, f.URL, started, http.Header{"Traceparent": {hdr.Get("Traceparent")}})                    // runs finish
	post(t, f.URL, started, nil)                                                                     // duplicate
	post(t, f.URL, sagatest.Event("x", "io.ksaga.test.nope", nil, saga.ExtCorrelationID, "s1"), nil) // 400, type "other"

	sagatest.Eventually(t, 10*time.Second, func() error {
		spans := rcv.Spans()
		var first, finish *otlptest.Span
		for i, s := range spans {
			switch s.Name {
			case "ksaga.step io.ksaga.test.start":
				first = &spans[i]
			case "ksaga.step io.ksaga.test.started":
				if s.Attributes["ksaga.outcome"] == "applied" {
					finish = &spans[i]
				}
			}
		}
		if first == nil || finish == nil {
			return fmt.Errorf("spans %v", spans)
		}
		// flags: sampled, and its parent came from another hop (OTLP's
		// "parent is remote" bits), which is how a backend sees the hop
		if first.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || first.Parent != "00f067aa0ba902b7" || first.Service != "tracer" || first.Flags != 0x301 {
			return fmt.Errorf("start span %+v", first)
		}
		if finish.TraceID != first.TraceID || finish.Parent != first.SpanID || finish.Attributes["ksaga.saga_id"] != "s1" ||
			finish.Attributes["ksaga.step"] != "finish" {
			return fmt.Errorf("finish span %+v must be a child of %s", finish, first.SpanID)
		}
		return nil
	})

	resp, err := http.Get(f.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{
		`ksaga_step_events_total{outcome="applied",service="tracer",type="io.ksaga.test.start"} 1`,
		`ksaga_step_events_total{outcome="applied",service="tracer",type="io.ksaga.test.started"} 1`,
		`ksaga_step_events_total{outcome="duplicate",service="tracer",type="io.ksaga.test.started"} 1`,
		`ksaga_step_events_total{outcome="refused",service="tracer",type="io.ksaga.test.started"} 1`,
		`ksaga_step_events_total{outcome="invalid",service="tracer",type="other"} 1`,
		`ksaga_step_replies_total{service="tracer",type="io.ksaga.test.finished"} 2`,
		`ksaga_sagas_total{service="tracer",status="running"} 1`,
		`ksaga_sagas_total{service="tracer",status="completed"} 1`,
		`ksaga_step_errors_total{class="bad_input",service="tracer"} 2`,
		`ksaga_step_duration_seconds_count{service="tracer",type="io.ksaga.test.start"} 1`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if bytes.Contains(body, []byte(`s1`)) {
		t.Error("a saga id leaked into a metric label")
	}
}

func TestTraceContextFlowsWithoutAnExporter(t *testing.T) {
	url, _ := sagatest.RedisURL(t)
	f := sagatest.Start(t, participantSetup, map[string]string{"REDIS_URL": url, "K_SERVICE": "quiet", "LOG_LEVEL": "debug"})
	_, hdr := post(t, f.URL, sagatest.Event("s2", "io.ksaga.test.start", map[string]int{}, saga.ExtCorrelationID, "s2"), http.Header{"Traceparent": {parent}})
	if !strings.HasPrefix(hdr.Get("Traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-") {
		t.Fatalf("traceparent %q: the trace must flow on with tracing off", hdr.Get("Traceparent"))
	}
	// the CloudEvents distributed-tracing extension is read when headers have none
	r, _ := post(t, f.URL, sagatest.Event("s3", "io.ksaga.test.start", map[string]int{}, "traceparent", parent), nil)
	if !strings.HasPrefix(r.Header.Get("Traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-") {
		t.Fatalf("traceparent from the extension: %q", r.Header.Get("Traceparent"))
	}
	// log lines of the step carry the trace id
	sagatest.Eventually(t, 5*time.Second, func() error {
		for _, l := range f.Out.Lines(t) {
			if l["ce_id"] == "s2" && l["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" {
				return nil
			}
		}
		return fmt.Errorf("no log line of event s2 with the trace id")
	})
}

// TestSagaCollector: the fleet-wide gauges, per definition, from the
// store: sagas in flight, overdue ones, and sagas by status.
func TestSagaCollector(t *testing.T) {
	rdb := sagatest.Redis(t)
	slow := sagatest.New(t, testSaga, rdb)
	quickDef := *testSaga
	quickDef.Name, quickDef.Timeout = "quick", saga.Duration(time.Millisecond) // overdue at once
	quick := sagatest.New(t, &quickDef, rdb)
	slow.Run("running", map[string]int{}, "io.ksaga.test.started")
	slow.Run("done", map[string]int{}, "io.ksaga.test.finished")
	quick.Run("late", map[string]int{}, "io.ksaga.test.started")

	c := telemetry.NewSagaCollector(slow.Store, slow.Store.Definitions, quiet)
	m := telemetry.NewMetrics()
	m.Registry.MustRegister(c)
	sagatest.Eventually(t, 5*time.Second, func() error {
		body := scrape(t, m)
		for _, want := range []string{
			`ksaga_sagas_in_flight{saga="test"} 1`, `ksaga_sagas_in_flight{saga="quick"} 1`,
			`ksaga_sagas_overdue{saga="test"} 0`, `ksaga_sagas_overdue{saga="quick"} 1`,
			`ksaga_sagas{saga="test",status="running"} 1`, `ksaga_sagas{saga="test",status="completed"} 1`,
			`ksaga_sagas{saga="quick",status="running"} 1`, `ksaga_sagas{saga="quick",status="completed"} 0`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("no %s in\n%s", want, grep(body, "ksaga_sagas"))
			}
		}
		return nil
	})
}
