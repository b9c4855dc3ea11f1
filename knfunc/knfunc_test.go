package knfunc_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
)

// reserve is the domain write of the test step: take qty from a stock counter.
var reserve = saga.EffectScript{Name: "test.reserve", Lua: `
local stock = tonumber(redis.call('GET', keys[1]) or '0')
if stock < tonumber(args[1]) then return 'out of stock' end
redis.call('DECRBY', keys[1], args[1])`}

// newStep is a complete saga step: it starts a saga on "test.start" and
// reserves stock on "test.reserve", failing into compensation when short.
func newStep(store saga.Store, logger *slog.Logger) saga.Step {
	return &saga.Participant{Source: "/ksaga/test", Store: store, Logger: logger, Actions: map[string]saga.Action{
		"io.ksaga.test.start": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			return saga.Transition{SagaID: in.Event.ID(), Create: true, Data: in.Event.Data(), Deadline: time.Now().Add(time.Minute),
				Step: "start", OnSuccess: saga.Outcome{Outcome: "started", Reply: &saga.Reply{Type: "io.ksaga.test.started"}}}, nil
		},
		"io.ksaga.test.reserve": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			var req struct {
				Qty int `json:"qty"`
			}
			if err := in.Decode(&req); err != nil {
				return saga.Transition{}, err
			}
			return saga.Transition{Step: "reserve:" + in.Event.ID(), Effect: reserve.Call([]string{"stock"}, req.Qty),
				OnSuccess: saga.Outcome{Outcome: "reserved", Compensable: true, Reply: &saga.Reply{Type: "io.ksaga.test.reserved", Data: in.Event.Data()}},
				OnFailure: &saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reply: &saga.Reply{Type: "io.ksaga.test.failed", Data: in.Event.Data()}},
			}, nil
		},
	}}
}

// startFunction runs knfunc.Run as a function's main would, on a free port.
func startFunction(t *testing.T, env map[string]string, setup knfunc.Setup) *fntest.Func {
	t.Helper()
	env["K_SERVICE"] = "test"
	return fntest.Start(t, func(ctx context.Context, getenv func(string) string, out io.Writer) error {
		return knfunc.Run(ctx, getenv, out, setup)
	}, env)
}

func stepSetup(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	store, err := env.NewStore(ctx, reserve)
	if err != nil {
		return nil, err
	}
	return &knfunc.Function{Step: newStep(store, env.Logger)}, nil
}

func newEvent(id, typ, sagaID string, data string) event.Event {
	if sagaID == "" {
		return fntest.Event(id, typ, []byte(data))
	}
	return fntest.Event(id, typ, []byte(data), saga.ExtCorrelationID, sagaID)
}

func TestStepOverHTTP(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	f := startFunction(t, map[string]string{"REDIS_URL": srv.URL()}, stepSetup)
	ctx := context.Background()
	rdb.Set(ctx, "stock", 5, 0)

	for _, structured := range []bool{false, true} {
		mode := map[bool]string{false: "binary", true: "structured"}[structured]
		t.Run(mode+" mode: start, reserve, redelivery", func(t *testing.T) {
			sagaID := "saga-" + mode
			r := fntest.Post(t, f.URL, newEvent(sagaID, "io.ksaga.test.start", "", `{"order":1}`), structured)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != "io.ksaga.test.started" {
				t.Fatalf("start: %d %s %v", r.Status, r.Body, r.Reply)
			}
			if saga.SagaIDOf(*r.Reply) != sagaID || r.Reply.Extensions()[saga.ExtCausationID] != sagaID {
				t.Fatalf("reply correlation: %v", r.Reply.Extensions())
			}
			in := newEvent("res-"+mode, "io.ksaga.test.reserve", sagaID, `{"qty":2}`)
			in.SetExtension(saga.ExtSagaVersion, r.Reply.Extensions()[saga.ExtSagaVersion])
			first := fntest.Post(t, f.URL, in, structured)
			second := fntest.Post(t, f.URL, in, structured)
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
		})
	}
	if stock, _ := rdb.Get(ctx, "stock").Int(); stock != 1 {
		t.Fatalf("stock %d, want 1: each reserve applied once", stock)
	}

	t.Run("business failure is a failure event, not an HTTP error", func(t *testing.T) {
		fntest.Post(t, f.URL, newEvent("saga-short", "io.ksaga.test.start", "", `{}`), false)
		r := fntest.Post(t, f.URL, newEvent("res-short", "io.ksaga.test.reserve", "saga-short", `{"qty":9}`), false)
		if r.Status != 200 || r.Reply == nil || r.Reply.Type() != "io.ksaga.test.failed" {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		var data map[string]any
		_ = json.Unmarshal(r.Reply.Data(), &data)
		if data["reason"] != "out of stock" || data["qty"] != float64(9) {
			t.Fatalf("failure data %s", r.Reply.Data())
		}
	})

	t.Run("unknown saga is acknowledged, not 404", func(t *testing.T) {
		r := fntest.Post(t, f.URL, newEvent("res-ghost", "io.ksaga.test.reserve", "ghost", `{"qty":1}`), false)
		if r.Status != 200 || r.Reply != nil {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
	})

	t.Run("100 concurrent events of one saga end as a serial order would", func(t *testing.T) {
		rdb.Set(ctx, "stock", 1000, 0)
		fntest.Post(t, f.URL, newEvent("saga-many", "io.ksaga.test.start", "", `{}`), false)
		var wg sync.WaitGroup
		codes := make(chan int, 100)
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes <- fntest.Post(t, f.URL, newEvent(fmt.Sprintf("many-%d", i), "io.ksaga.test.reserve", "saga-many", `{"qty":1}`), i%2 == 0).Status
			}()
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != 200 {
				t.Fatalf("status %d", c)
			}
		}
		if stock, _ := rdb.Get(ctx, "stock").Int(); stock != 900 {
			t.Fatalf("stock %d, want 900", stock)
		}
		var st saga.State
		getState(t, srv.URL(), "saga-many", &st)
		if st.Version != 101 || len(st.Steps) != 101 || len(st.Compensate) != 100 {
			t.Fatalf("version %d, %d steps, %d to compensate", st.Version, len(st.Steps), len(st.Compensate))
		}
	})

	t.Run("every log line of a step is JSON with the saga id", func(t *testing.T) {
		var seen bool
		sc := bufio.NewScanner(strings.NewReader(f.Out.String()))
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("not JSON: %s", sc.Text())
			}
			if line["ce_id"] != nil {
				seen = true
				if line["correlationid"] == nil || line["service"] != "test" {
					t.Fatalf("event log line without saga id: %s", sc.Text())
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
	start := newEvent("saga-down", "io.ksaga.test.start", "", `{}`)
	srv.Stop()
	if r := fntest.Post(t, f.URL, start, false); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("redis down: %d %s, want 503", r.Status, r.Body)
	}
	resp, err := http.Get(f.URL + "/readyz")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("readyz with redis down: %v %v", resp.StatusCode, err)
	}
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for { // the broker's retry, as Knative would send it
		r := fntest.Post(t, f.URL, start, false)
		if r.Status == 200 && r.Reply != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("retry after restart: %d %s", r.Status, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getState(t *testing.T, redisURL, id string, st *saga.State) {
	t.Helper()
	rdb, err := knfuncClient(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	s, err := rdb.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	*st = s
}
