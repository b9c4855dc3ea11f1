package e2e

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/otlptest"
	"github.com/ksaga/ksaga/sagatest"
)

// TestOneTracePerSaga: with an OTLP endpoint, one saga yields a single
// trace with one span per step, in causal order (each step's span descends
// from the previous step's), across every broker hop and process. The
// step functions' /metrics show the saga, and every log line they wrote
// for it is JSON carrying its saga id.
func TestOneTracePerSaga(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"choreography":  {"io.ksaga.order.create", "io.ksaga.order.created", "io.ksaga.payment.authorized", "io.ksaga.inventory.reserved", "io.ksaga.order.confirmed"},
		"orchestration": {"io.ksaga.order.create", "io.ksaga.payment.authorize", "io.ksaga.inventory.reserve", "io.ksaga.order.confirm", "io.ksaga.notification.send"},
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			rcv := otlptest.Start(t)
			s := start(t, mode, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL, "OTEL_BSP_SCHEDULE_DELAY=50"},
				"--env", "LOG_LEVEL=debug")
			a, code := s.order(t, 1, item("book", 1))
			if code != http.StatusAccepted {
				t.Fatalf("POST /orders %d", code)
			}
			s.settled(t, a.OrderID, 20*time.Second)

			// spans arrive in batches from eight processes: poll until the
			// chain is complete, then assert on it
			var steps []otlptest.Span
			var types []string
			sagatest.Eventually(t, 15*time.Second, func() error {
				all := rcv.Spans()
				steps, types = steps[:0], types[:0]
				parents := map[string]string{}
				for _, sp := range all {
					parents[sp.SpanID] = sp.Parent
					if sp.Attributes["ksaga.saga_id"] == a.SagaID && sp.Attributes["ksaga.service"] != "orchestrator" {
						steps = append(steps, sp)
					}
				}
				if len(steps) < len(want[mode]) {
					return fmt.Errorf("%d step spans for saga %s", len(steps), a.SagaID)
				}
				sort.Slice(steps, func(i, j int) bool { return steps[i].StartNano < steps[j].StartNano })
				descends := func(child, ancestor string) bool {
					for p := parents[child]; p != ""; p = parents[p] {
						if p == ancestor {
							return true
						}
					}
					return false
				}
				for i, sp := range steps {
					types = append(types, sp.Attributes["cloudevents.event_type"])
					if sp.TraceID != steps[0].TraceID {
						return fmt.Errorf("span %s (%s) is in trace %s, not %s", sp.Name, sp.Service, sp.TraceID, steps[0].TraceID)
					}
					if i > 0 && !descends(sp.SpanID, steps[i-1].SpanID) {
						return fmt.Errorf("%s does not descend from %s (yet)", sp.Name, steps[i-1].Name)
					}
				}
				return nil
			})
			if got := strings.Join(types[:len(want[mode])], " "); got != strings.Join(want[mode], " ") {
				t.Errorf("step spans in causal order: %s\nwant: %s", got, strings.Join(want[mode], " "))
			}
			if len(steps) != 5 {
				t.Errorf("%d step spans, want one per step (5)", len(steps))
			}
			brokerSpans := 0
			for _, sp := range rcv.Spans() {
				if sp.Service == "ksaga-dev" && sp.TraceID == steps[0].TraceID {
					brokerSpans++
				}
			}
			if brokerSpans == 0 {
				t.Error("no broker delivery span in the saga's trace")
			}

			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.dev.Port))
			if err != nil {
				t.Fatal(err)
			}
			devMetrics, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			for _, w := range []string{`ksaga_broker_events_total{broker="saga/default",code="202"}`,
				`ksaga_broker_deliveries_total{broker="saga/default",outcome="delivered",trigger="order-on-create"}`, "ksaga_sagas_in_flight 0"} {
				if !strings.Contains(string(devMetrics), w) {
					t.Errorf("ksaga dev /metrics lacks %s", w)
				}
			}

			code, body := s.dev.Do(t, "payment", http.MethodGet, "/metrics", nil)
			if code != 200 || !strings.Contains(string(body), `ksaga_step_events_total{outcome="applied",service="payment"`) {
				t.Errorf("payment /metrics %d lacks the applied event:\n%.2000s", code, body)
			}
			code, body = s.dev.Do(t, "order", http.MethodGet, "/metrics", nil)
			for _, w := range []string{`ksaga_sagas_total{service="order",status="running"} 1`, `ksaga_sagas_total{service="order",status="completed"} 1`, "ksaga_sagas_in_flight 0",
				`ksaga_sagas_aborted_total{cause="cancel"} 0`, `ksaga_sagas_aborted_total{cause="deadline"} 0`} {
				if code != 200 || !strings.Contains(string(body), w) {
					t.Errorf("order /metrics lacks %s", w)
				}
			}

			for _, svc := range []string{"payment", "inventory", "notification"} {
				n := 0
				for _, l := range s.dev.Lines(t, svc) {
					if l["ce_id"] == nil {
						continue
					}
					n++
					if l["correlationid"] != a.SagaID || l["trace_id"] != steps[0].TraceID {
						t.Errorf("%s log line without the saga id or trace id: %v", svc, l)
					}
				}
				if n == 0 {
					t.Errorf("%s logged nothing for the saga", svc)
				}
			}
		})
	}
}
