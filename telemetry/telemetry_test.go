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

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/internal/otlptest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
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
	}
	for _, tt := range tests {
		tr := telemetry.NewTracing(context.Background(), "svc", func(k string) string { return tt.env[k] }, quiet)
		if tr.Enabled != tt.want {
			t.Errorf("%v: enabled %v, want %v", tt.env, tr.Enabled, tt.want)
		}
		_ = tr.Shutdown(context.Background())
	}
}

var echo = saga.EffectScript{Name: "test.noop", Lua: `return`}

func participantSetup(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	store, err := env.NewStore(ctx, echo)
	if err != nil {
		return nil, err
	}
	return &knfunc.Function{Step: &saga.Participant{Source: "/ksaga/test", Store: store, Logger: env.Logger, Actions: map[string]saga.Action{
		"io.ksaga.test.start": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			return saga.Transition{SagaID: in.Event.ID(), Create: true, Data: []byte(`{}`), Deadline: time.Now().Add(time.Minute), Step: "start",
				OnSuccess: saga.Outcome{Outcome: "started", Reply: &saga.Reply{Type: "io.ksaga.test.started"}}}, nil
		},
		"io.ksaga.test.finish": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			return saga.Transition{Step: "finish", Effect: echo.Call(nil),
				OnSuccess: saga.Outcome{Outcome: "done", Status: saga.StatusCompleted, Reply: &saga.Reply{Type: "io.ksaga.test.finished"}}}, nil
		},
	}}}, nil
}

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func post(t *testing.T, url string, id, typ, sagaID string, header http.Header) (fntest.Response, http.Header) {
	t.Helper()
	e := fntest.Event(id, typ, map[string]int{"n": 1}, saga.ExtCorrelationID, sagaID)
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	r := fntest.PostRequest(t, req, e, header)
	return r, r.Header
}

func TestStepTracesAndMetrics(t *testing.T) {
	srv := testredis.Start(t)
	rcv := otlptest.Start(t)
	f := fntest.Start(t, func(ctx context.Context, getenv func(string) string, out io.Writer) error {
		return knfunc.Run(ctx, getenv, out, participantSetup)
	}, map[string]string{"REDIS_URL": srv.URL(), "K_SERVICE": "tracer", "OTEL_EXPORTER_OTLP_ENDPOINT": rcv.URL})

	h := http.Header{"Traceparent": {parent}}
	r1, hdr := post(t, f.URL, "s1", "io.ksaga.test.start", "", h)
	if r1.Reply == nil {
		t.Fatalf("%d %s", r1.Status, r1.Body)
	}
	if !strings.HasPrefix(hdr.Get("Traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-") || hdr.Get("Traceparent") == parent {
		t.Fatalf("response traceparent %q: want the same trace, the step's own span", hdr.Get("Traceparent"))
	}
	post(t, f.URL, "f1", "io.ksaga.test.finish", "s1", http.Header{"Traceparent": {hdr.Get("Traceparent")}})
	post(t, f.URL, "f1", "io.ksaga.test.finish", "s1", nil) // duplicate
	post(t, f.URL, "x", "io.ksaga.test.nope", "s1", nil)    // 400, type "other"

	fntest.Eventually(t, 10*time.Second, func() error {
		spans := rcv.Spans()
		if len(spans) < 2 {
			return fmt.Errorf("%d spans", len(spans))
		}
		var start, finish *otlptest.Span
		for i, s := range spans {
			switch s.Name {
			case "ksaga.step io.ksaga.test.start":
				start = &spans[i]
			case "ksaga.step io.ksaga.test.finish":
				if finish == nil {
					finish = &spans[i]
				}
			}
		}
		if start == nil || finish == nil {
			return fmt.Errorf("spans %v", spans)
		}
		if start.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || start.Parent != "00f067aa0ba902b7" || start.Service != "tracer" {
			return fmt.Errorf("start span %+v", start)
		}
		if finish.TraceID != start.TraceID || finish.Parent != start.SpanID || finish.Attributes["ksaga.saga_id"] != "s1" {
			return fmt.Errorf("finish span %+v must be a child of %s", finish, start.SpanID)
		}
		return nil
	})

	resp, err := http.Get(f.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`ksaga_step_events_total{outcome="applied",service="tracer",type="io.ksaga.test.start"} 1`,
		`ksaga_step_events_total{outcome="applied",service="tracer",type="io.ksaga.test.finish"} 1`,
		`ksaga_step_events_total{outcome="duplicate",service="tracer",type="io.ksaga.test.finish"} 1`,
		`ksaga_step_events_total{outcome="invalid",service="tracer",type="other"} 1`,
		`ksaga_step_replies_total{service="tracer",type="io.ksaga.test.finished"} 2`,
		`ksaga_sagas_total{service="tracer",status="running"} 1`,
		`ksaga_sagas_total{service="tracer",status="completed"} 1`,
		`ksaga_step_errors_total{class="bad_input",service="tracer"} 1`,
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
	srv := testredis.Start(t)
	f := fntest.Start(t, func(ctx context.Context, getenv func(string) string, out io.Writer) error {
		return knfunc.Run(ctx, getenv, out, participantSetup)
	}, map[string]string{"REDIS_URL": srv.URL(), "K_SERVICE": "quiet", "LOG_LEVEL": "debug"})
	_, hdr := post(t, f.URL, "s2", "io.ksaga.test.start", "", http.Header{"Traceparent": {parent}})
	if !strings.HasPrefix(hdr.Get("Traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-") {
		t.Fatalf("traceparent %q: the trace must flow on with tracing off", hdr.Get("Traceparent"))
	}
	// the CloudEvents distributed-tracing extension is read when headers have none
	e := fntest.Event("s3", "io.ksaga.test.start", map[string]int{}, "traceparent", parent)
	req, _ := http.NewRequest(http.MethodPost, f.URL, nil)
	r := fntest.PostRequest(t, req, e, nil)
	if !strings.HasPrefix(r.Header.Get("Traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-") {
		t.Fatalf("traceparent from the extension: %q", r.Header.Get("Traceparent"))
	}
	// log lines of the step carry the trace id
	fntest.Eventually(t, 5*time.Second, func() error {
		for _, l := range f.Out.Lines(t) {
			if l["ce_id"] == "s2" && l["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" {
				return nil
			}
		}
		return fmt.Errorf("no log line of event s2 with the trace id")
	})
}

func TestSagaCollector(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	ctx := context.Background()
	now := time.Now()
	rdb.ZAdd(ctx, redisstore.ActiveKey,
		redisZ(now.Add(time.Minute), "fresh"), redisZ(now.Add(-time.Minute), "late"), redisZ(now.Add(-48*time.Hour), "expired"))
	c := telemetry.NewSagaCollector(rdb, redisstore.ActiveKey, 24*time.Hour, quiet)
	m := telemetry.NewMetrics()
	m.Registry.MustRegister(c)
	body := scrape(t, m)
	if !strings.Contains(body, "ksaga_sagas_in_flight 2") || !strings.Contains(body, "ksaga_sagas_overdue 1") {
		t.Fatalf("gauges:\n%s", grep(body, "ksaga_sagas_"))
	}
	if rdb.ZScore(ctx, redisstore.ActiveKey, "expired").Err() == nil {
		t.Fatal("an expired saga was not pruned from the index")
	}
}
