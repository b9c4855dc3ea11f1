package devbroker_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
)

// TestChain is the end-to-end case: three triggers whose subscribers are
// real sdk-go CloudEvents receivers (like Knative Functions), each
// replying with the next type; a fourth trigger collects the end of every
// chain. 100 chains run concurrently.
func TestChain(t *testing.T) {
	const chains = 100
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	var mu sync.Mutex
	steps := map[string]map[string]int{} // step → chain → calls
	// Each step is a sdk-go client with StartReceiver on its own listener,
	// the way Knative Functions (func-go) receive events. (sdk-go's
	// NewHTTPReceiveHandler is not used: under concurrent requests its
	// per-request goroutines can take each other's messages and leave a
	// request hanging forever.)
	step := func(name, next string) *apis.URL {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// A short shutdown timeout: http.Server.Shutdown otherwise waits
		// for keep-alive connections the broker dialled but never used.
		p, err := cloudevents.NewHTTP(cloudevents.WithListener(l), cehttp.WithShutdownTimeout(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		c, err := cloudevents.NewClient(p)
		if err != nil {
			t.Fatal(err)
		}
		recvCtx, stop := context.WithCancel(ctx)
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			if err := c.StartReceiver(recvCtx, func(_ context.Context, ev cloudevents.Event) (*cloudevents.Event, protocol.Result) {
				chain := fmt.Sprint(ev.Extensions()["chain"])
				mu.Lock()
				if steps[name] == nil {
					steps[name] = map[string]int{}
				}
				steps[name][chain]++
				mu.Unlock()
				out := cloudevents.NewEvent()
				out.SetID(ev.ID() + "-" + next)
				out.SetSource("/fn/" + name)
				out.SetType(next)
				out.SetExtension("chain", chain)
				if err := out.SetData(cloudevents.ApplicationJSON, map[string]string{"from": name}); err != nil {
					return nil, err
				}
				return &out, nil
			}); err != nil && recvCtx.Err() == nil { // the forced shutdown is expected
				t.Errorf("%s: StartReceiver: %v", name, err)
			}
		}()
		t.Cleanup(func() { stop(); <-stopped })
		u, _ := apis.ParseURL("http://" + l.Addr().String())
		return u
	}
	services := map[types.NamespacedName]*apis.URL{
		{Namespace: ns, Name: "step1"}: step("step1", "saga.step2"),
		{Namespace: ns, Name: "step2"}: step("step2", "saga.step3"),
		{Namespace: ns, Name: "step3"}: step("step3", "saga.done"),
		{Namespace: ns, Name: "done"}:  e.sink.url("/done"),
	}
	triggers := []*eventingv1.Trigger{
		trigger("step1", onType("saga.step1")),
		trigger("step2", onType("saga.step2")),
		trigger("step3", onType("saga.step3")),
		trigger("done", onType("saga.done")),
	}
	cfg := e.config(brokers(delivery(3, "exponential", "PT0.05S", "")), triggers)
	cfg.Resolve = devbroker.DefaultResolver(services, e.ingressURL)
	e.start(cfg)

	var wg sync.WaitGroup
	for i := range chains {
		wg.Go(func() {
			ev := newEvent("saga.step1", "chain", fmt.Sprint(i))
			if code := e.post("/saga/default", ev, i%2 == 0, nil); code != http.StatusAccepted {
				t.Errorf("chain %d: ingress %d", i, code)
			}
		})
	}
	wg.Wait()
	done := e.sink.wait(t, "/done", chains)
	e.waitIdle()

	seen := map[string]bool{}
	for _, r := range done {
		c := ext(t, r, "chain")
		if seen[c] {
			t.Errorf("chain %s finished twice", c)
		}
		seen[c] = true
		if r.Event.Source() != "/fn/step3" {
			t.Errorf("chain %s: done event from %s", c, r.Event.Source())
		}
	}
	if len(seen) != chains {
		t.Errorf("%d chains finished, want %d", len(seen), chains)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range []string{"step1", "step2", "step3"} {
		if len(steps[s]) != chains {
			t.Errorf("%s ran for %d chains, want %d", s, len(steps[s]), chains)
		}
		for c, n := range steps[s] {
			if n != 1 {
				t.Errorf("%s ran %d times for chain %s", s, n, c)
			}
		}
	}
}
