// Package sagatest is the test kit for step authors: seed a saga with a
// record at any point of its Definition, deliver an event to a step (in
// process, or over real HTTP to the function running as its main would),
// and assert its reply and its effect — on a real redis-server or an
// embedded miniredis. It also holds the conformance suite every saga.Store
// must pass (StoreSuite).
//
//	k := sagatest.New(t, ordersaga.Saga, sagatest.Redis(t))
//	step := k.Step(setup, map[string]string{"K_SERVICE": "inventory"}) // as its main builds it
//	e := k.Run("saga-1", order, ordersaga.PayAuthorized)               // the saga waits on payment's result
//	reply, err := k.Deliver(step, e)                                   // the inventory step acts on it
//	// assert reply.Type(), the stock in Redis, k.Record("saga-1").Steps; then walk
//	// on from the step's reply to the next event it acts on, its compensation:
//	e = k.Continue(*reply, ordersaga.ConfirmFailed, sagatest.Fail(ordersaga.Confirm, "refused"))
//
// Start runs a function as its main would, on a free port, for the steps
// whose HTTP behaviour matters (Post, PostSaga); Orchestrated walks a saga
// in orchestration mode, to a step's command.
package sagatest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// Kit seeds and drives sagas of one Definition in a test.
type Kit struct {
	T     testing.TB
	Def   *saga.Definition
	Redis redis.UniversalClient
	Store *redisstore.Store
	// Source is the source of the events the kit's own steps emit.
	Source string
}

// New returns a kit for def on rdb (see Redis, Miniredis).
func New(t testing.TB, def *saga.Definition, rdb redis.UniversalClient) *Kit {
	t.Helper()
	if err := def.Validate(); err != nil {
		t.Fatal(err)
	}
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &Kit{T: t, Def: def, Redis: rdb, Store: store, Source: "/sagatest"}
}

// Option shapes the path Run walks.
type Option func(*walk)

type walk struct {
	outputs  map[string]any
	outcomes map[string]string
	fail     map[string]string
	start    event.Event
	hasE     bool
	orch     saga.Step
}

// Output has the step record v as its output when it succeeds (what its
// compensation reads), as the real step would.
func Output(step string, v any) Option {
	return func(w *walk) { w.outputs[step] = v }
}

// Outcome has the step record outcome when it succeeds (default
// "succeeded", "compensated" for a compensation), so that a history reads
// as the real step's would.
func Outcome(step, outcome string) Option {
	return func(w *walk) { w.outcomes[step] = outcome }
}

// Fail has the step fail with reason (its first forward run). A step is
// named as in the Definition, or by its command where a name repeats (the
// order saga's order step creates and confirms: Fail(ordersaga.Confirm, r)
// fails the confirm).
func Fail(step, reason string) Option {
	return func(w *walk) { w.fail[step] = reason }
}

// Orchestrated walks the saga in orchestration mode: every step's result
// goes to o (an ops.Orchestrator on the kit's Store) and the command it
// replies with to the steps, so Run can stop at a command (e.g. the
// orchestrator's io.ksaga.payment.authorize) for the step under test.
func Orchestrated(o saga.Step) Option {
	return func(w *walk) { w.orch = o }
}

// StartEvent sets the command that starts the saga (default: the start
// command from the kit's Source with the saga id as correlationid).
func StartEvent(e event.Event) Option {
	return func(w *walk) { w.start, w.hasE = e, true }
}

// Run starts saga id with data and walks its Definition in choreography
// mode (see Orchestrated) — every step succeeds unless Fail says
// otherwise, and a failure compensates the completed steps newest first —
// until the saga emits an event of type until, which it returns: the event
// the saga then waits on, to deliver to the step under test. The record is
// written by a real saga.Participant on the kit's Store, exactly as at run
// time; the kit's own steps run no effects. Run fails the test if the walk
// ends (the saga waits on nothing) before until.
func (k *Kit) Run(id string, data any, until string, opts ...Option) event.Event {
	k.T.Helper()
	w := k.walk(opts)
	e := w.start
	if !w.hasE {
		e = Event(id+"-start", k.Def.Steps[0].Command, data, saga.ExtCorrelationID, id)
		e.SetSource(k.Source)
	}
	return k.walkFrom(w, data, e, until)
}

// Continue walks a saga on from e, as Run does, until it emits an event of
// type until, which it returns. e is an event the saga waits on, typically
// the reply of the step under test: a test can drive a saga through the
// real step and on to the next event that step acts on (a charge, then its
// refund).
func (k *Kit) Continue(e event.Event, until string, opts ...Option) event.Event {
	k.T.Helper()
	return k.walkFrom(k.walk(opts), nil, e, until)
}

// Resume walks saga id on from the event its record waits on, as Run
// does, until it emits an event of type until: for a test that moved the
// saga with the step under test and wants the next event it acts on.
func (k *Kit) Resume(id, until string, opts ...Option) event.Event {
	k.T.Helper()
	st := k.Record(id)
	if st.Next == nil {
		k.T.Fatalf("sagatest: saga %s waits on no event", id)
	}
	return k.Continue(*saga.ToEvent(id, "", st.Next), until, opts...)
}

// Step builds the step a function's setup serves, on the kit's Redis and
// store, with env as its environment (K_SERVICE names it; the rest as
// knfunc reads it), to deliver events to in process (Deliver). For the
// function's HTTP behaviour, run it with Start.
func (k *Kit) Step(setup knfunc.Setup, env map[string]string) saga.Step {
	k.T.Helper()
	e, err := knfunc.NewEnv(func(key string) string { return env[key] }, k.Redis, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		k.T.Fatal(err)
	}
	e.Store = k.Store
	fn, err := setup(context.Background(), e)
	if err != nil {
		k.T.Fatalf("sagatest: setup: %v", err)
	}
	if fn.Close != nil {
		k.T.Cleanup(func() { _ = fn.Close() })
	}
	if fn.Step == nil {
		k.T.Fatal("sagatest: the function serves no step")
	}
	return fn.Step
}

func (w *walk) outcome(step, def string) string {
	if o, ok := w.outcomes[step]; ok {
		return o
	}
	return def
}

func (k *Kit) walk(opts []Option) *walk {
	w := &walk{outputs: map[string]any{}, outcomes: map[string]string{}, fail: map[string]string{}}
	for _, o := range opts {
		o(w)
	}
	return w
}

func (k *Kit) walkFrom(w *walk, data any, e event.Event, until string) event.Event {
	k.T.Helper()
	p := k.participant(data, w)
	results := map[string]bool{}
	for _, t := range k.Def.Results() {
		results[t] = true
	}
	id := saga.SagaIDOf(e)
	ctx := context.Background()
	for range 4 * (len(k.Def.Steps) + 2) {
		if e.Type() == until {
			return e
		}
		var step saga.Step = p
		if _, ok := k.Def.Route(e.Type()); !ok && (w.orch == nil || !results[e.Type()]) {
			k.T.Fatalf("sagatest: saga %s ended with %s without emitting %s", id, e.Type(), until)
		}
		if w.orch != nil && results[e.Type()] {
			step = w.orch
		}
		reply, err := step.Handle(ctx, e)
		if err != nil {
			k.T.Fatalf("sagatest: walking saga %s to %s: %s: %v", id, until, e.Type(), err)
		}
		if reply == nil {
			k.T.Fatalf("sagatest: saga %s ended (after %s) without emitting %s", id, e.Type(), until)
		}
		e = *reply
	}
	k.T.Fatalf("sagatest: saga %s never emitted %s", id, until)
	return e
}

// participant runs every command of the definition, with no effects.
func (k *Kit) participant(data any, w *walk) *saga.Participant {
	failed := map[string]bool{}
	actions := saga.Actions{}
	for i, s := range k.Def.Steps {
		name, command, start := s.Name, s.Command, i == 0
		actions[s.Command] = func(_ context.Context, in saga.Input) (saga.Transition, error) {
			t := saga.Transition{Outcome: w.outcome(name, "succeeded"), Output: w.outputs[name]}
			for _, key := range []string{command, name} {
				if reason, ok := w.fail[key]; ok && !failed[key] {
					failed[key] = true
					t.Fail = reason
					break
				}
			}
			if start {
				t.Data = data
			}
			return t, nil
		}
		if s.Compensable() {
			actions[s.Compensation] = func(context.Context, saga.Input) (saga.Transition, error) {
				return saga.Transition{Outcome: w.outcome(s.Compensation, "compensated")}, nil
			}
		}
	}
	if f := k.Def.Finally; f != nil {
		actions[f.Command] = func(context.Context, saga.Input) (saga.Transition, error) {
			return saga.Transition{Outcome: w.outcome(f.Name, "succeeded")}, nil
		}
	}
	p, err := saga.NewParticipant(k.Def, actions, saga.ParticipantOptions{Source: k.Source, Store: k.Store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		k.T.Fatal(err)
	}
	return p
}

// Deliver hands e to step in process and returns its reply (nil for none)
// and error.
func (k *Kit) Deliver(step saga.Step, e event.Event) (*event.Event, error) {
	return step.Handle(context.Background(), e)
}

// Record returns saga id's record; it fails the test if it cannot.
func (k *Kit) Record(id string) saga.State {
	k.T.Helper()
	st, err := k.Store.Get(context.Background(), id)
	if err != nil {
		k.T.Fatalf("sagatest: saga %s: %v", id, err)
	}
	return st
}

// Unchanged fails the test unless saga before.ID's record is still
// before: its version, status, history, compensation stack and outputs (an
// event that must change nothing).
func (k *Kit) Unchanged(before saga.State) {
	k.T.Helper()
	after := k.Record(before.ID)
	if after.Version != before.Version || after.Status != before.Status || !slices.Equal(Outcomes(after), Outcomes(before)) ||
		!slices.Equal(after.Compensate, before.Compensate) || !maps.EqualFunc(after.Outputs, before.Outputs, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
		k.T.Fatalf("sagatest: the saga moved: %s v%d %v → %s v%d %v", before.Status, before.Version, Outcomes(before),
			after.Status, after.Version, Outcomes(after))
	}
}

// Outcomes lists a record's history as "step/outcome" entries.
func Outcomes(st saga.State) []string {
	out := make([]string, 0, len(st.Steps))
	for _, s := range st.Steps {
		out = append(out, s.Step+"/"+s.Outcome)
	}
	return out
}

// Eventually polls cond every few milliseconds until it returns nil or
// timeout passes, then fails the test with its last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
