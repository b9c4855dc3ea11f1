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

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

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

// syncBuffer collects a function's stdout safely across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type fn struct {
	url    string
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startFunction runs knfunc.Run as a function's main would, on a free port.
func startFunction(t *testing.T, env map[string]string, setup knfunc.Setup) *fn {
	t.Helper()
	env["LISTEN_ADDRESS"] = "127.0.0.1:0"
	env["K_SERVICE"] = "test"
	ctx, cancel := context.WithCancel(context.Background())
	f := &fn{out: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- knfunc.Run(ctx, func(k string) string { return env[k] }, f.out, setup) }()
	t.Cleanup(func() { f.stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(f.out.String()))
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				f.url = "http://" + line.Addr + "/"
				return f
			}
		}
		select {
		case err := <-f.done:
			t.Fatalf("function exited: %v\n%s", err, f.out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("function not listening:\n%s", f.out.String())
	return nil
}

func (f *fn) stop(t *testing.T) {
	f.cancel()
	select {
	case err := <-f.done:
		if err != nil {
			t.Errorf("function returned %v", err)
		}
		f.done <- nil
	case <-time.After(10 * time.Second):
		t.Error("function did not stop")
	}
}

func stepSetup(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	store, err := env.NewStore(ctx, reserve)
	if err != nil {
		return nil, err
	}
	return &knfunc.Function{Step: newStep(store, env.Logger)}, nil
}

func newEvent(id, typ, sagaID string, data string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/test/sender")
	e.SetType(typ)
	if sagaID != "" {
		e.SetExtension(saga.ExtCorrelationID, sagaID)
	}
	_ = e.SetData(event.ApplicationJSON, json.RawMessage(data))
	return e
}

type response struct {
	status int
	body   string
	reply  *event.Event
}

func post(t *testing.T, url string, e event.Event, structured bool) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	ctx := context.Background()
	if structured {
		ctx = binding.WithForceStructured(ctx)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, body: string(body)}
	if len(body) > 0 || resp.Header.Get("Ce-Id") != "" {
		msg := cehttp.NewMessage(resp.Header, io.NopCloser(bytes.NewReader(body)))
		if msg.ReadEncoding() != binding.EncodingUnknown {
			ev, err := binding.ToEvent(context.Background(), msg)
			if err != nil {
				t.Fatalf("reply: %v", err)
			}
			r.reply = ev
		}
	}
	return r
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
			r := post(t, f.url, newEvent(sagaID, "io.ksaga.test.start", "", `{"order":1}`), structured)
			if r.status != 200 || r.reply == nil || r.reply.Type() != "io.ksaga.test.started" {
				t.Fatalf("start: %d %s %v", r.status, r.body, r.reply)
			}
			if saga.SagaIDOf(*r.reply) != sagaID || r.reply.Extensions()[saga.ExtCausationID] != sagaID {
				t.Fatalf("reply correlation: %v", r.reply.Extensions())
			}
			in := newEvent("res-"+mode, "io.ksaga.test.reserve", sagaID, `{"qty":2}`)
			in.SetExtension(saga.ExtSagaVersion, r.reply.Extensions()[saga.ExtSagaVersion])
			first := post(t, f.url, in, structured)
			second := post(t, f.url, in, structured)
			if first.status != 200 || second.status != 200 || first.reply == nil || second.reply == nil {
				t.Fatalf("reserve: %d %s / %d %s", first.status, first.body, second.status, second.body)
			}
			a, _ := json.Marshal(first.reply)
			b, _ := json.Marshal(second.reply)
			if !bytes.Equal(a, b) {
				t.Fatalf("redelivery got a different reply:\n%s\n%s", a, b)
			}
			if first.reply.Type() != "io.ksaga.test.reserved" || first.reply.Extensions()[saga.ExtSagaVersion] != "2" {
				t.Fatalf("reply: %s", a)
			}
		})
	}
	if stock, _ := rdb.Get(ctx, "stock").Int(); stock != 1 {
		t.Fatalf("stock %d, want 1: each reserve applied once", stock)
	}

	t.Run("business failure is a failure event, not an HTTP error", func(t *testing.T) {
		post(t, f.url, newEvent("saga-short", "io.ksaga.test.start", "", `{}`), false)
		r := post(t, f.url, newEvent("res-short", "io.ksaga.test.reserve", "saga-short", `{"qty":9}`), false)
		if r.status != 200 || r.reply == nil || r.reply.Type() != "io.ksaga.test.failed" {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		var data map[string]any
		_ = json.Unmarshal(r.reply.Data(), &data)
		if data["reason"] != "out of stock" || data["qty"] != float64(9) {
			t.Fatalf("failure data %s", r.reply.Data())
		}
	})

	t.Run("unknown saga is acknowledged, not 404", func(t *testing.T) {
		r := post(t, f.url, newEvent("res-ghost", "io.ksaga.test.reserve", "ghost", `{"qty":1}`), false)
		if r.status != 200 || r.reply != nil {
			t.Fatalf("got %d %q", r.status, r.body)
		}
	})

	t.Run("100 concurrent events of one saga end as a serial order would", func(t *testing.T) {
		rdb.Set(ctx, "stock", 1000, 0)
		post(t, f.url, newEvent("saga-many", "io.ksaga.test.start", "", `{}`), false)
		var wg sync.WaitGroup
		codes := make(chan int, 100)
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes <- post(t, f.url, newEvent(fmt.Sprintf("many-%d", i), "io.ksaga.test.reserve", "saga-many", `{"qty":1}`), i%2 == 0).status
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
		sc := bufio.NewScanner(strings.NewReader(f.out.String()))
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
	if r := post(t, f.url, start, false); r.status != http.StatusServiceUnavailable {
		t.Fatalf("redis down: %d %s, want 503", r.status, r.body)
	}
	resp, err := http.Get(strings.TrimSuffix(f.url, "/") + "/readyz")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("readyz with redis down: %v %v", resp.StatusCode, err)
	}
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for { // the broker's retry, as Knative would send it
		r := post(t, f.url, start, false)
		if r.status == 200 && r.reply != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("retry after restart: %d %s", r.status, r.body)
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
