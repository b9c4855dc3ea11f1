package knfunc_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

func TestDrainFinishesInFlightRequests(t *testing.T) {
	srv := testredis.Start(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	slow := saga.StepFunc(func(ctx context.Context, e event.Event) (*event.Event, error) {
		close(entered)
		<-release
		r := event.New()
		r.SetID("r")
		r.SetSource("/slow")
		r.SetType("io.ksaga.test.slow")
		return &r, nil
	})
	f := startFunction(t, map[string]string{"REDIS_URL": srv.URL(), "KSAGA_SHUTDOWN_TIMEOUT": "10s"},
		func(context.Context, *knfunc.Env) (*knfunc.Function, error) { return &knfunc.Function{Step: slow}, nil })

	got := make(chan sagatest.Response, 1)
	go func() { got <- sagatest.Post(t, f.URL, newEvent("1", "io.ksaga.test.slow", "", `{}`), false) }()
	<-entered
	f.Cancel() // SIGTERM
	// readiness fails while draining; poll until it does
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(f.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readyz still ok while draining")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-f.Done:
		t.Fatalf("Run returned before the in-flight request finished: %v", err)
	default:
	}
	close(release)
	if r := <-got; r.Status != 200 || r.Reply == nil {
		t.Fatalf("in-flight request: %d %s", r.Status, r.Body)
	}
	select {
	case err := <-f.Done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		f.Done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after draining")
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{
		"PORT": "9090", "K_SERVICE": "payment", "K_REVISION": "payment-00001", "K_CONFIGURATION": "payment",
		"K_SINK":         "http://broker-ingress.knative-eventing.svc.cluster.local/saga/default",
		"K_CE_OVERRIDES": `{"extensions":{"team":"payments"}}`, "REDIS_URL": "rediss://u:p@redis:6380/1",
		"LOG_LEVEL": "debug", "KSAGA_SHUTDOWN_TIMEOUT": "5s", "KSAGA_RETENTION": "1h", "KSAGA_SAGA_TIMEOUT": "2m",
	}
	c, err := knfunc.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 9090 || c.ListenAddress != ":9090" || c.Service != "payment" || c.Revision != "payment-00001" ||
		c.CEOverrides["team"] != "payments" || c.RedisURL != env["REDIS_URL"] || c.LogLevel.String() != "DEBUG" ||
		c.ShutdownTimeout != 5*time.Second || c.Retention != time.Hour || c.SagaTimeout != 2*time.Minute {
		t.Fatalf("config %+v", c)
	}
	d, err := knfunc.ConfigFromEnv(func(string) string { return "" })
	if err != nil || d.Port != 8080 || d.ListenAddress != ":8080" || d.RedisURL != "redis://127.0.0.1:6379/0" || d.ShutdownTimeout != 30*time.Second {
		t.Fatalf("defaults %+v %v", d, err)
	}
	bad := map[string]string{"PORT": "http", "K_SINK": "not a url", "K_CE_OVERRIDES": "{", "LOG_LEVEL": "loud", "KSAGA_RETENTION": "-1s"}
	_, err = knfunc.ConfigFromEnv(func(k string) string { return bad[k] })
	for _, name := range []string{"PORT", "K_SINK", "K_CE_OVERRIDES", "LOG_LEVEL", "KSAGA_RETENTION"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error %v does not name %s", err, name)
		}
	}
	// Redis expires in whole seconds: a shorter retention is refused.
	for v, ok := range map[string]bool{"500ms": false, "1s": true} {
		_, err := knfunc.ConfigFromEnv(func(k string) string { return map[string]string{"KSAGA_RETENTION": v}[k] })
		if (err == nil) != ok || (!ok && !strings.Contains(err.Error(), "at least 1s")) {
			t.Errorf("KSAGA_RETENTION=%s: %v", v, err)
		}
	}
}

func TestSink(t *testing.T) {
	var calls atomic.Int32
	var lastExt atomic.Value
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		b, _ := json.Marshal(ev.Extensions())
		lastExt.Store(string(b))
		switch ev.Type() {
		case "flaky":
			if n < 3 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		case "bad":
			w.WriteHeader(http.StatusBadRequest)
			return
		case "down":
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	s := knfunc.NewSink(sink.URL, map[string]string{"team": "orders"})
	ctx := context.Background()

	if err := s.Send(ctx, newEvent("1", "flaky", "s", `{}`)); err != nil || calls.Load() != 3 {
		t.Fatalf("flaky: %v after %d calls", err, calls.Load())
	}
	if !strings.Contains(lastExt.Load().(string), `"team":"orders"`) {
		t.Fatalf("overrides not applied: %s", lastExt.Load())
	}
	calls.Store(0)
	if err := s.Send(ctx, newEvent("2", "bad", "s", `{}`)); saga.Code(err) != saga.EInvalid || calls.Load() != 1 {
		t.Fatalf("400 must not be retried: %v after %d calls", err, calls.Load())
	}
	calls.Store(0)
	if err := s.Send(ctx, newEvent("3", "down", "s", `{}`)); saga.Code(err) != saga.ETransient || calls.Load() != 4 {
		t.Fatalf("500: %v after %d calls", err, calls.Load())
	}
}

func TestDialResolvesDotLocalhost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(r.Host)) }))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	resp, err := knfunc.NewHTTPClient(time.Second).Get("http://users.saga.localhost:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if got := string(body); got != "users.saga.localhost:"+port {
		t.Fatalf("Host %q", got)
	}
}
