package knfunc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// testSaga is a two-step saga: start (undone by cancel), then reserve.
var testSaga = &saga.Definition{Name: "test", Timeout: saga.Duration(time.Minute), Steps: []saga.StepDef{
	{Name: "start", Command: "io.ksaga.test.start", Succeeded: "io.ksaga.test.started",
		Compensation: "io.ksaga.test.cancel", Compensated: "io.ksaga.test.cancelled"},
	{Name: "reserve", Command: "io.ksaga.test.reserve", Succeeded: "io.ksaga.test.reserved", Failed: "io.ksaga.test.failed"},
}}

// take is the reserve step's domain write: take qty from a stock counter.
var take = saga.Effect{Name: "test.take", Lua: `
local stock = tonumber(redis.call('GET', keys.stock) or '0')
if stock < tonumber(args.qty) then return 'out of stock' end
redis.call('DECRBY', keys.stock, args.qty)`}

type request struct {
	Qty int `json:"qty"`
}

// stepSetup is a function serving both steps of testSaga, as a step
// author writes one: the start acts on the command's data, reserve on the
// saga's record.
func stepSetup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	return env.Step(testSaga, saga.Actions{
		"io.ksaga.test.start": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			var req request
			if err := in.Decode(&req); err != nil {
				return saga.Transition{}, err
			}
			return saga.Transition{Outcome: "started", Data: req}, nil
		},
		"io.ksaga.test.reserve": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			var req request
			if err := in.Saga.Decode(&req); err != nil {
				return saga.Transition{}, err
			}
			return saga.Transition{Outcome: "reserved", Effect: take.Call().Key("stock", "stock").Arg("qty", req.Qty)}, nil
		},
	})
}

// startFunction runs setup as knfunc.Main would, as service "test".
func startFunction(t *testing.T, env map[string]string, setup knfunc.Setup) *sagatest.Func {
	t.Helper()
	env["K_SERVICE"] = "test"
	return sagatest.Start(t, setup, env)
}

func newEvent(id, typ, sagaID string, data string) event.Event {
	if sagaID == "" {
		return sagatest.Event(id, typ, []byte(data))
	}
	return sagatest.Event(id, typ, []byte(data), saga.ExtCorrelationID, sagaID)
}

// TestStepOverHTTP: env.Step serves a saga's step over HTTP in both
// CloudEvents modes: the start command starts a saga, the saga's own reply
// drives the next step, a redelivery gets the very same reply, a business
// failure is a failure event, and the effect runs once.
func TestStepOverHTTP(t *testing.T) {
	url, rdb := sagatest.RedisURL(t)
	k := sagatest.New(t, testSaga, rdb)
	f := startFunction(t, map[string]string{"REDIS_URL": url}, stepSetup)
	ctx := context.Background()
	rdb.Set(ctx, "stock", 5, 0)

	for _, structured := range []bool{false, true} {
		mode := map[bool]string{false: "binary", true: "structured"}[structured]
		t.Run(mode+" mode: start, reserve, redelivery", func(t *testing.T) {
			sagaID := "saga-" + mode
			r := sagatest.Post(t, f.URL, newEvent("start-"+mode, "io.ksaga.test.start", sagaID, `{"qty":2}`), structured)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != "io.ksaga.test.started" || r.Reply.Source() != "/ksaga/test" {
				t.Fatalf("start: %d %s %v", r.Status, r.Body, r.Reply)
			}
			if saga.SagaIDOf(*r.Reply) != sagaID || r.Reply.Extensions()[saga.ExtCausationID] != "start-"+mode ||
				r.Reply.Extensions()[saga.ExtSagaVersion] != "1" {
				t.Fatalf("reply extensions: %v", r.Reply.Extensions())
			}
			first := sagatest.Post(t, f.URL, *r.Reply, structured)
			second := sagatest.Post(t, f.URL, *r.Reply, !structured)
			if first.Status != 200 || second.Status != 200 || first.Reply == nil || second.Reply == nil {
				t.Fatalf("reserve: %d %s / %d %s", first.Status, first.Body, second.Status, second.Body)
			}
			a, _ := json.Marshal(first.Reply)
			b, _ := json.Marshal(second.Reply)
			if !bytes.Equal(a, b) {
				t.Fatalf("redelivery got a different reply:\n%s\n%s", a, b)
			}
			if first.Reply.Type() != "io.ksaga.test.reserved" || first.Reply.Extensions()[saga.ExtSagaVersion] != "2" {
				t.Fatalf("reply: %s", a)
			}
			if st := k.Record(sagaID); st.Status != saga.StatusCompleted || len(st.Compensate) != 0 {
				t.Fatalf("saga %s %v", st.Status, sagatest.Outcomes(st))
			}
		})
	}
	if stock, _ := rdb.Get(ctx, "stock").Int(); stock != 1 {
		t.Fatalf("stock %d, want 1: each reserve applied once", stock)
	}

	t.Run("business failure is a failure event, not an HTTP error", func(t *testing.T) {
		r := sagatest.Post(t, f.URL, newEvent("start-short", "io.ksaga.test.start", "saga-short", `{"qty":9}`), false)
		fail := sagatest.Post(t, f.URL, *r.Reply, false)
		if fail.Status != 200 || fail.Reply == nil || fail.Reply.Type() != "io.ksaga.test.failed" {
			t.Fatalf("got %d %s", fail.Status, fail.Body)
		}
		var data map[string]any
		_ = json.Unmarshal(fail.Reply.Data(), &data)
		if data["reason"] != "out of stock" || data["qty"] != float64(9) {
			t.Fatalf("failure data %s", fail.Reply.Data())
		}
		if st := k.Record("saga-short"); st.Status != saga.StatusCompensating || st.Reason != "out of stock" {
			t.Fatalf("saga %s %q", st.Status, st.Reason)
		}
	})

	t.Run("unknown saga is acknowledged, not 404", func(t *testing.T) {
		e := newEvent("res-ghost", "io.ksaga.test.started", "ghost", `{"qty":1}`)
		e.SetExtension(saga.ExtSagaVersion, "1")
		if r := sagatest.Post(t, f.URL, e, false); r.Status != 200 || r.Reply != nil {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
	})

	t.Run("an event the saga did not emit is refused", func(t *testing.T) {
		e := k.Run("saga-forged", request{Qty: 1}, "io.ksaga.test.started")
		forged := newEvent("forged", "io.ksaga.test.started", "saga-forged", `{"qty":1}`)
		forged.SetExtension(saga.ExtSagaVersion, "1")
		if r := sagatest.Post(t, f.URL, forged, false); r.Status != http.StatusBadRequest {
			t.Fatalf("forged: %d %s", r.Status, r.Body)
		}
		if r := sagatest.Post(t, f.URL, e, false); r.Reply == nil || r.Reply.Type() != "io.ksaga.test.reserved" {
			t.Fatalf("the genuine event: %d %s", r.Status, r.Body)
		}
	})

	t.Run("50 concurrent deliveries of one event apply it once", func(t *testing.T) {
		rdb.Set(ctx, "stock", 1000, 0)
		e := k.Run("saga-many", request{Qty: 3}, "io.ksaga.test.started")
		var wg sync.WaitGroup
		replies := make(chan string, 50)
		for i := range 50 {
			wg.Go(func() {
				r := sagatest.Post(t, f.URL, e, i%2 == 0)
				if r.Status != 200 || r.Reply == nil {
					replies <- fmt.Sprintf("status %d %s", r.Status, r.Body)
					return
				}
				replies <- r.Reply.ID()
			})
		}
		wg.Wait()
		close(replies)
		ids := map[string]int{}
		for id := range replies {
			ids[id]++
		}
		if len(ids) != 1 {
			t.Fatalf("replies %v, want one reply 50 times", ids)
		}
		if stock, _ := rdb.Get(ctx, "stock").Int(); stock != 997 {
			t.Fatalf("stock %d, want 997", stock)
		}
		st := k.Record("saga-many")
		if st.Version != 2 || len(st.Steps) != 2 || st.Steps[1].Redelivered != 49 {
			t.Fatalf("version %d, history %v, %d redeliveries", st.Version, sagatest.Outcomes(st), st.Steps[1].Redelivered)
		}
	})

	t.Run("every log line of a step is JSON with the saga id", func(t *testing.T) {
		var seen bool
		for _, line := range f.Out.Lines(t) {
			if line["ce_id"] != nil {
				seen = true
				if line["correlationid"] == nil || line["service"] != "test" {
					t.Fatalf("event log line without saga id: %v", line)
				}
			}
		}
		if !seen {
			t.Fatal("no event log lines (the ghost saga's warning should be one)")
		}
	})
}

func TestRedisDownAnswers503ThenRecovers(t *testing.T) {
	srv := testredis.Start(t)
	f := startFunction(t, map[string]string{"REDIS_URL": srv.URL() + "?max_retries=-1"}, stepSetup)
	start := newEvent("saga-down", "io.ksaga.test.start", "", `{"qty":1}`)
	srv.Stop()
	if r := sagatest.Post(t, f.URL, start, false); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("redis down: %d %s, want 503", r.Status, r.Body)
	}
	resp, err := http.Get(f.URL + "/readyz")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("readyz with redis down: %v %v", resp.StatusCode, err)
	}
	_ = resp.Body.Close()
	srv.Restart()
	sagatest.Eventually(t, 5*time.Second, func() error { // the broker's retry, as Knative would send it
		if r := sagatest.Post(t, f.URL, start, false); r.Status != 200 || r.Reply == nil {
			return fmt.Errorf("retry after restart: %d %s", r.Status, r.Body)
		}
		return nil
	})
}

// TestRoutesAnswerJSON: a function's own routes sit next to the step, the
// health and metrics routes; a path none serves is a JSON 404, a method a
// route does not allow a JSON 405 with Allow, and a path the mux cleans is
// still redirected.
func TestRoutesAnswerJSON(t *testing.T) {
	url, _ := sagatest.RedisURL(t)
	f := startFunction(t, map[string]string{"REDIS_URL": url}, func(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
		fn, err := stepSetup(ctx, env)
		if err != nil {
			return nil, err
		}
		fn.Routes = map[string]http.Handler{"GET /things/{id}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"id":"` + r.PathValue("id") + `"}`))
		})}
		return fn, nil
	})
	for _, tt := range []struct {
		method, path string
		status       int
		allow        string
		want         map[string]string
	}{
		{http.MethodGet, "/nope", http.StatusNotFound, "", map[string]string{"error": "not found: GET /nope"}},
		{http.MethodPost, "/things/1", http.StatusMethodNotAllowed, "GET, HEAD", map[string]string{"error": "method POST not allowed on /things/1"}},
		{http.MethodDelete, "/healthz", http.StatusMethodNotAllowed, "GET, HEAD", map[string]string{"error": "method DELETE not allowed on /healthz"}},
		{http.MethodGet, "/things/1", http.StatusOK, "", map[string]string{"id": "1"}},
		{http.MethodGet, "/x/../things/2", http.StatusOK, "", map[string]string{"id": "2"}}, // redirected to /things/2
	} {
		req, _ := http.NewRequest(tt.method, f.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		err = json.NewDecoder(resp.Body).Decode(&body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/json" ||
			resp.Header.Get("Allow") != tt.allow || !maps.Equal(body, tt.want) {
			t.Errorf("%s %s: %d %q %v (Allow %q, %v), want %d JSON %v", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"),
				body, resp.Header.Get("Allow"), err, tt.status, tt.want)
		}
	}
}
