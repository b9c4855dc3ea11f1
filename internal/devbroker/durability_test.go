package devbroker_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
)

// gate makes a subscriber block until it is opened; a blocked request
// ends early when the broker abandons it.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

func (g *gate) handler(code int) func(http.ResponseWriter, rec, int) {
	return func(w http.ResponseWriter, _ rec, _ int) {
		<-g.ch
		w.WriteHeader(code)
	}
}

// TestDurableAcrossRestart: a broker restart loses nothing: every event
// answered 202 is delivered even if the broker stops before delivering
// it. Run 1 accepts events but its subscriber never answers; Run stops
// after the drain timeout; events accepted while no Run is active are
// kept too; a new Broker on the same Redis with the same consumer name
// delivers all of them.
func TestDurableAcrossRestart(t *testing.T) {
	e := newEnv(t)
	stuck := newGate()
	defer stuck.open()
	e.sink.on("/sub", stuck.handler(http.StatusOK))
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("sub")})
	cfg.DrainTimeout = 200 * time.Millisecond
	e.start(cfg)

	var want []string
	for range 20 {
		ev := newEvent("t")
		want = append(want, ev.ID())
		e.send(ev)
	}
	e.sink.wait(t, "/sub", 20) // all 20 are in flight, blocked
	start := time.Now()
	e.stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %v to stop with a 200ms drain timeout", d)
	}
	// Broker 1 still serves the ingress, as it would between restarts.
	for range 5 {
		ev := newEvent("t")
		want = append(want, ev.ID())
		e.send(ev)
	}
	stuck.open()
	before := len(e.sink.got("/sub"))

	e.start(cfg) // a new Broker, same Redis, same consumer
	var got []string
	eventually(t, "all accepted events delivered after the restart", func() bool {
		got = got[:0]
		seen := map[string]bool{}
		for _, r := range e.sink.got("/sub")[before:] {
			if !seen[r.Event.ID()] {
				seen[r.Event.ID()] = true
				got = append(got, r.Event.ID())
			}
		}
		return len(got) == len(want)
	})
	e.waitIdle()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	pending, err := e.rdb.XPending(context.Background(), "ksaga:broker:{saga/default}", "ksaga-devbroker").Result()
	if err != nil || pending.Count != 0 {
		t.Errorf("pending after drain: %+v, %v", pending, err)
	}
}

// TestRestartSkipsFinishedTriggers: an entry matched by several triggers
// is acknowledged when its last delivery finishes; progress is recorded
// in Redis, so a restart redelivers only to the triggers that had not
// finished.
func TestRestartSkipsFinishedTriggers(t *testing.T) {
	e := newEnv(t)
	stuck := newGate()
	defer stuck.open()
	e.sink.on("/slow", stuck.handler(http.StatusOK))
	e.sink.on("/fast", func(w http.ResponseWriter, _ rec, _ int) {
		replyWith(w, newEvent("fast.reply"), http.StatusOK)
	})
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{
		trigger("fast", onType("t")), trigger("slow", onType("t")), trigger("replies", onType("fast.reply"))})
	cfg.DrainTimeout = 100 * time.Millisecond
	e.start(cfg)

	ev := newEvent("t")
	e.send(ev)
	e.sink.wait(t, "/slow", 1)
	e.sink.wait(t, "/replies", 1) // fast's reply was stored with fast's progress
	// The sink saw the reply before the broker acknowledged it: wait until
	// only the original entry (held by slow) is left, or the restart would
	// rightly deliver the reply again.
	eventually(t, "the reply's delivery acknowledged", func() bool {
		n, err := e.rdb.XLen(context.Background(), "ksaga:broker:{"+ns+"/"+brokerName+"}").Result()
		return err == nil && n == 1
	})
	e.stop()
	stuck.open()

	e.start(cfg)
	got := e.sink.wait(t, "/slow", 2)
	e.waitIdle()
	if got[1].Event.ID() != ev.ID() {
		t.Errorf("slow got %s after the restart, want %s", got[1].Event.ID(), ev.ID())
	}
	if n := len(e.sink.got("/fast")); n != 1 {
		t.Errorf("fast delivered %d times, want 1 (it had finished before the restart)", n)
	}
	if n := len(e.sink.got("/replies")); n != 1 {
		t.Errorf("fast's reply delivered %d times, want 1", n)
	}
	if keys, _ := e.rdb.Keys(context.Background(), "ksaga:*").Result(); !slices.Equal(keys, []string{"ksaga:broker:{saga/default}"}) {
		t.Errorf("keys left in Redis: %v, want only the stream", keys)
	}
}

// TestIngressWithoutRun: the ingress stores events although no Run is
// active (the consumer group does not exist yet); the first Run delivers
// them.
func TestIngressWithoutRun(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("sub")})
	b, err := devbroker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.current.Store(b)
	ev := newEvent("t")
	e.send(ev)
	e.start(cfg)
	if got := e.sink.wait(t, "/sub", 1); got[0].Event.ID() != ev.ID() {
		t.Errorf("delivered %s, want %s", got[0].Event.ID(), ev.ID())
	}
}

// TestRestartAcksFinishedEntry: a crash between the last trigger's
// progress record and the final acknowledgement leaves an entry pending
// whose triggers have all finished; the next Run acknowledges it without
// delivering it again. (The crash point is simulated by writing the
// progress set, see the Redis layout in store.go.)
func TestRestartAcksFinishedEntry(t *testing.T) {
	e := newEnv(t)
	stuck := newGate()
	defer stuck.open()
	e.sink.on("/a", stuck.handler(http.StatusOK))
	e.sink.on("/b", stuck.handler(http.StatusOK))
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("a"), trigger("b")})
	cfg.DrainTimeout = 100 * time.Millisecond
	e.start(cfg)
	e.send(newEvent("t"))
	e.sink.wait(t, "/a", 1)
	e.sink.wait(t, "/b", 1)
	e.stop()
	stuck.open()

	ctx := context.Background()
	key := "ksaga:broker:{saga/default}"
	pending, err := e.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: key, Group: "ksaga-devbroker", Start: "-", End: "+", Count: 10}).Result()
	if err != nil || len(pending) != 1 {
		t.Fatalf("pending = %v, %v; want one entry", pending, err)
	}
	if err := e.rdb.SAdd(ctx, key+":done:"+pending[0].ID, "a", "b").Err(); err != nil {
		t.Fatal(err)
	}
	e.start(cfg)
	e.waitIdle()
	if n := len(e.sink.got("/a")) + len(e.sink.got("/b")); n != 2 {
		t.Errorf("%d deliveries, want 2 (none after the restart)", n)
	}
	if n, _ := e.rdb.Exists(ctx, key+":done:"+pending[0].ID).Result(); n != 0 {
		t.Error("progress set not deleted")
	}
}
