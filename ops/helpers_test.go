package ops_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// abc is the tests' own saga, to show that ops knows no saga: a → b → c
// (the pivot), then f whatever the outcome. Step b has a timeout of its
// own, shorter than the saga's.
var abc = &saga.Definition{
	Name:    "abc",
	Timeout: saga.Duration(10 * time.Minute),
	Steps: []saga.StepDef{
		{Name: "a", Command: "t.a.do", Succeeded: "t.a.done", Failed: "t.a.failed", Compensation: "t.a.undo", Compensated: "t.a.undone"},
		{Name: "b", Command: "t.b.do", Succeeded: "t.b.done", Failed: "t.b.failed", Compensation: "t.b.undo", Compensated: "t.b.undone",
			Timeout: saga.Duration(time.Minute)},
		{Name: "c", Command: "t.c.do", Succeeded: "t.c.done", Failed: "t.c.failed"},
	},
	Finally:     &saga.StepDef{Name: "f", Command: "t.f.do", Succeeded: "t.f.done"},
	Completed:   "t.abc.completed",
	Compensated: "t.abc.compensated",
}

// xy is a saga with neither a final step nor terminal events: the
// orchestrator has nothing to send once it ends.
var xy = &saga.Definition{
	Name:    "xy",
	Timeout: saga.Duration(10 * time.Minute),
	Steps: []saga.StepDef{
		{Name: "x", Command: "t.x.do", Succeeded: "t.x.done", Failed: "t.x.failed", Compensation: "t.x.undo", Compensated: "t.x.undone"},
		{Name: "y", Command: "t.y.do", Succeeded: "t.y.done", Failed: "t.y.failed"},
	},
}

// order is the data the tests start sagas with.
var order = map[string]any{"order_id": "o-1", "user_id": 7, "items": []map[string]any{{"sku": "book", "qty": 1}}}

// opsSource is the source of what the operations emit in these tests.
const opsSource = "/ksaga/ops-test"

// recorder is a Sender that keeps what it is given, validating each event
// as a Broker's ingress would; while down it refuses (503-like).
type recorder struct {
	mu     sync.Mutex
	events []event.Event
	down   atomic.Bool
}

func (r *recorder) Send(_ context.Context, e event.Event) error {
	if err := e.Validate(); err != nil {
		return saga.Invalid("the broker refuses an invalid event: %v", err)
	}
	if r.down.Load() {
		return saga.Transient(fmt.Errorf("HTTP 503"), "the broker")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e.Clone())
	return nil
}

// Events returns what was published so far.
func (r *recorder) Events() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Types lists the types of what was published so far.
func (r *recorder) Types() []string {
	var out []string
	for _, e := range r.Events() {
		out = append(out, e.Type())
	}
	return out
}

// env is one test's world: a real redis-server, kits of both definitions
// on it, and an Operator publishing to a recorder, whose clock runs ahead
// of the wall clock by offset.
type env struct {
	t      *testing.T
	rdb    *redis.Client
	store  *redisstore.Store
	abc    *sagatest.Kit
	order  *sagatest.Kit
	sink   *recorder
	sagas  *ops.Registry
	op     *ops.Operator
	offset atomic.Int64
	logs   *sagatest.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rdb := sagatest.Redis(t)
	e := &env{t: t, rdb: rdb, abc: sagatest.New(t, abc, rdb), order: sagatest.New(t, ordersaga.Saga, rdb), sink: &recorder{}, logs: &sagatest.Buffer{}}
	e.store = e.abc.Store
	sagas, err := ops.NewRegistry(abc, ordersaga.Saga, xy)
	if err != nil {
		t.Fatal(err)
	}
	e.sagas = sagas
	e.op = &ops.Operator{Sagas: sagas, Store: e.store, Sink: e.sink, Source: opsSource, Now: e.now,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil))}
	return e
}

// useStore has everything in the env use store.
func (e *env) useStore(store *redisstore.Store) {
	e.store, e.op.Store, e.abc.Store, e.order.Store = store, store, store, store
}

// clockStore returns a store on the env's Redis whose clock is at, and
// the function that moves it.
func (e *env) clockStore(at time.Time) (*redisstore.Store, func(time.Time)) {
	e.t.Helper()
	var mu sync.Mutex
	store, err := redisstore.New(e.rdb, redisstore.Options{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return at }})
	if err != nil {
		e.t.Fatal(err)
	}
	return store, func(t time.Time) { mu.Lock(); at = t; mu.Unlock() }
}

// now is the operations' clock: the wall clock plus offset.
func (e *env) now() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }

// later moves the operations' clock d ahead of the wall clock.
func (e *env) later(d time.Duration) { e.offset.Store(int64(d)) }

// get returns a saga's record.
func (e *env) get(id string) saga.State {
	e.t.Helper()
	st, err := e.store.Get(context.Background(), id)
	if err != nil {
		e.t.Fatalf("saga %s: %v", id, err)
	}
	return st
}

// deadLetters returns every dead letter, newest first.
func (e *env) deadLetters() []saga.DeadLetter {
	e.t.Helper()
	p, err := e.store.DeadLetters(context.Background(), saga.DeadLetterQuery{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return p.DeadLetters
}

// steps returns a Participant running every command of def, succeeding
// unless fail names the step (the first forward run fails with that
// reason), on the env's store: the steps of a saga run in orchestration.
// A saga it starts has the business key "key-<saga id>".
func (e *env) steps(def *saga.Definition, fail map[string]string) *saga.Participant {
	e.t.Helper()
	return steps(e.t, def, e.store, fail, 0)
}

// steps returns a Participant running every command of def on store (see
// env.steps); timeout, if set, overrides the saga's.
func steps(t *testing.T, def *saga.Definition, store saga.Store, fail map[string]string, timeout time.Duration) *saga.Participant {
	t.Helper()
	var mu sync.Mutex
	failed := map[string]bool{}
	actions := saga.Actions{}
	for i, s := range def.Steps {
		name, start := s.Name, i == 0
		actions[s.Command] = func(_ context.Context, in saga.Input) (saga.Transition, error) {
			t := saga.Transition{Outcome: "done"}
			mu.Lock()
			if reason, ok := fail[name]; ok && !failed[name] {
				failed[name], t.Fail = true, reason
			}
			mu.Unlock()
			if start {
				var data any
				if err := in.Decode(&data); err != nil {
					return saga.Transition{}, err
				}
				t.Data, t.Key = data, "key-"+in.SagaID
			}
			return t, nil
		}
		if s.Compensable() {
			actions[s.Compensation] = func(context.Context, saga.Input) (saga.Transition, error) {
				return saga.Transition{Outcome: "undone"}, nil
			}
		}
	}
	if f := def.Finally; f != nil {
		actions[f.Command] = func(context.Context, saga.Input) (saga.Transition, error) {
			return saga.Transition{Outcome: "sent"}, nil
		}
	}
	p, err := saga.NewParticipant(def, actions, saga.ParticipantOptions{Source: "/ksaga/steps-" + def.Name, Store: store, Timeout: timeout,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start is the command that starts saga id of def, with the order as data.
func start(def *saga.Definition, id string) event.Event {
	ev := sagatest.Event(id+"-start", def.Steps[0].Command, order, saga.ExtCorrelationID, id)
	ev.SetSource("/client")
	return ev
}

// version is an event's sagaversion.
func version(t *testing.T, e event.Event) int64 {
	t.Helper()
	v, err := saga.RequireVersion(e)
	if err != nil {
		t.Fatalf("%s: %v", e.Type(), err)
	}
	return v
}

// withVersion returns a copy of e at sagaversion v.
func withVersion(e event.Event, v int64) event.Event {
	c := e.Clone()
	c.SetExtension(saga.ExtSagaVersion, strconv.FormatInt(v, 10))
	return c
}

// deadLettered is e as a Broker dead-letters it: Knative's knativeerror*
// extensions added (the body base64, as Knative sends it).
func deadLettered(e event.Event, dest, code, body string) event.Event {
	c := e.Clone()
	c.SetExtension(ops.ExtErrorDest, dest)
	c.SetExtension(ops.ExtErrorCode, code)
	if body != "" {
		c.SetExtension(ops.ExtErrorData, base64.StdEncoding.EncodeToString([]byte(body)))
	}
	return c
}

// same reports whether two events are the same delivery: type, id,
// source, saga, version and data.
func same(a, b event.Event) bool {
	return a.Type() == b.Type() && a.ID() == b.ID() && a.Source() == b.Source() && saga.SagaIDOf(a) == saga.SagaIDOf(b) &&
		fmt.Sprint(a.Extensions()[saga.ExtSagaVersion]) == fmt.Sprint(b.Extensions()[saga.ExtSagaVersion]) && saga.SameJSON(a.Data(), b.Data())
}

// unchanged fails the test if the saga moved from before: its version,
// status, history, awaited event and reason.
func (e *env) unchanged(id string, before saga.State) {
	e.t.Helper()
	st := e.get(id)
	if st.Version != before.Version || st.Status != before.Status || len(st.Steps) != len(before.Steps) ||
		st.Reason != before.Reason || fmt.Sprint(st.Next) != fmt.Sprint(before.Next) || !slices.Equal(st.Compensate, before.Compensate) {
		e.t.Fatalf("saga %s moved:\n now %+v\n was %+v", id, st, before)
	}
}
