package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/ops"
	o "github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

func (e *env) deadLetterSink() *ops.DeadLetters {
	e.t.Helper()
	d, err := ops.NewDeadLetters(e.op)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// choreograph delivers ev, and every reply after it, to def's steps in
// choreography mode until a reply runs no step; it returns the last event.
func (e *env) choreograph(def *saga.Definition, ev event.Event) event.Event {
	e.t.Helper()
	p := e.steps(def, nil)
	for range 20 {
		if _, ok := def.Route(ev.Type()); !ok {
			return ev
		}
		reply, err := p.Handle(context.Background(), ev)
		if err != nil {
			e.t.Fatalf("%s: %v", ev.Type(), err)
		}
		if reply == nil {
			return ev
		}
		ev = *reply
	}
	e.t.Fatal("the saga never ended")
	return ev
}

// TestDeadLetteredCompensationMarksCompensationFailed: a compensation the
// Broker could not deliver stops the saga at compensation_failed, with the
// step and Knative's reason in its record and the dead letter recorded
// with the change; nothing is published, and a redelivered dead letter
// changes nothing and is kept once.
func TestDeadLetteredCompensationMarksCompensationFailed(t *testing.T) {
	tests := []struct {
		name  string
		def   *saga.Definition
		seed  func(e *env) event.Event // the compensation's event, as sent
		step  string
		dest  string
		cause string // the business failure that started the compensation
	}{
		{"choreography", abc, func(e *env) event.Event {
			return e.abc.Run("s1", order, "t.c.failed", sagatest.Fail("c", "no room"))
		}, "b", "http://b.saga.svc.cluster.local", "no room"},
		{"orchestration", abc, func(e *env) event.Event {
			failed := e.abc.Run("s1", order, "t.c.failed", sagatest.Fail("c", "no room"))
			cmd, err := ops.NewOrchestrator(e.sagas, e.store, orchestratorSource, nil).Handle(context.Background(), failed)
			if err != nil || cmd == nil || cmd.Type() != "t.b.undo" {
				e.t.Fatalf("orchestrator: %v %v", cmd, err)
			}
			return *cmd
		}, "b", "http://b.saga.svc.cluster.local", "no room"},
		{"the order saga", o.Saga, func(e *env) event.Event {
			return e.order.Run("s1", order, o.StockFailed, sagatest.Fail(o.StepInventory, "out of stock"))
		}, o.StepPayment, "http://payment.saga.svc.cluster.local", "out of stock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sink := e.deadLetterSink()
			sent := tt.seed(e)
			before := e.get("s1")
			dl := deadLettered(sent, tt.dest, "503", "injected fault\n")
			if got, err := sink.Handle(context.Background(), dl); got != nil || err != nil {
				t.Fatalf("%v %v", got, err)
			}
			st := e.get("s1")
			wantReason := sent.Type() + " could not be delivered to " + tt.dest + " (HTTP 503): injected fault"
			last := st.Steps[len(st.Steps)-1]
			if st.Status != saga.StatusCompensationFailed || st.FailedStep != tt.step || st.Reason != wantReason || st.Version != before.Version+1 ||
				st.Next != nil || last.Step != tt.step || last.Outcome != ops.OutcomeCompensationFailed || last.EventID != sent.ID() || last.EventType != sent.Type() {
				t.Fatalf("saga %+v\nhistory %v", st, sagatest.Outcomes(st))
			}
			if before.Reason != tt.cause {
				t.Fatalf("the compensation began with reason %q", before.Reason)
			}
			dls := e.deadLetters()
			if len(dls) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dls))
			}
			d := dls[0]
			if d.Handling != ops.HandlingCompensationFailed || d.SagaID != "s1" || d.EventType != sent.Type() || d.EventID != sent.ID() ||
				d.EventSource != sent.Source() || d.Destination != tt.dest || d.Code != "503" || d.Body != "injected fault" || d.Reason != wantReason {
				t.Fatalf("dead letter %+v", d)
			}
			var kept event.Event
			if err := json.Unmarshal(d.Event, &kept); err != nil {
				t.Fatal(err)
			}
			if !same(kept, sent) {
				t.Fatalf("kept event %v, want %v", kept, sent)
			}
			for _, x := range []string{ops.ExtErrorDest, ops.ExtErrorCode, ops.ExtErrorData} {
				if _, ok := kept.Extensions()[x]; ok {
					t.Fatalf("the kept event carries %s", x)
				}
			}
			if got := e.sink.Events(); len(got) != 0 {
				t.Fatalf("a failed compensation published %v", got)
			}
			// the dead letter redelivered (the sink's answer lost)
			if got, err := sink.Handle(context.Background(), dl); got != nil || err != nil {
				t.Fatalf("redelivered: %v %v", got, err)
			}
			e.unchanged("s1", st)
			if n := len(e.deadLetters()); n != 1 || len(e.sink.Events()) != 0 {
				t.Fatalf("redelivered: %d dead letters, published %v", n, e.sink.Types())
			}
		})
	}
}

// TestDeadLetteredForwardStepFailsTheSaga: a forward command or event the
// Broker could not deliver fails its step: the saga compensates, and the
// step's failure event is published (with the saga's next version) to
// drive the compensation in either mode.
func TestDeadLetteredForwardStepFailsTheSaga(t *testing.T) {
	tests := []struct {
		name   string
		def    *saga.Definition
		seed   func(e *env) event.Event
		step   string
		failed string
		stack  []string
	}{
		{"choreography event", abc, func(e *env) event.Event { return e.abc.Run("s1", order, "t.a.done") }, "b", "t.b.failed", []string{"a"}},
		{"orchestration command", abc, func(e *env) event.Event {
			done := e.abc.Run("s1", order, "t.a.done")
			cmd, err := ops.NewOrchestrator(e.sagas, e.store, orchestratorSource, nil).Handle(context.Background(), done)
			if err != nil || cmd == nil {
				e.t.Fatalf("orchestrator: %v %v", cmd, err)
			}
			return *cmd
		}, "b", "t.b.failed", []string{"a"}},
		{"the pivot", abc, func(e *env) event.Event { return e.abc.Run("s1", order, "t.b.done") }, "c", "t.c.failed", []string{"b", "a"}},
		{"the order's confirm", o.Saga, func(e *env) event.Event { return e.order.Run("s1", order, o.StockReserved) },
			o.StepOrder, o.ConfirmFailed, []string{o.StepInventory, o.StepPayment, o.StepOrder}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sink := e.deadLetterSink()
			sent := tt.seed(e)
			before := e.get("s1")
			dl := deadLettered(sent, "http://"+tt.step+".saga.svc.cluster.local", "500", "boom")

			e.sink.down.Store(true) // the Broker cannot take the failure event: retried
			if _, err := sink.Handle(context.Background(), dl); saga.StatusCode(err) != 503 {
				t.Fatalf("broker down: %v, want a transient error", err)
			}
			e.sink.down.Store(false)
			if got, err := sink.Handle(context.Background(), dl); got != nil || err != nil {
				t.Fatalf("%v %v", got, err)
			}
			pub := e.sink.Events()
			if len(pub) != 1 {
				t.Fatalf("published %v", e.sink.Types())
			}
			f := pub[0]
			if f.Type() != tt.failed || saga.SagaIDOf(f) != "s1" || version(t, f) != before.Version+1 ||
				f.ID() != saga.ReplyID(dl.Source(), dl.ID(), tt.failed) || f.Source() != opsSource {
				t.Fatalf("failure event %v", f)
			}
			st := e.get("s1")
			if st.Status != saga.StatusCompensating || st.FailedStep != tt.step || st.Reason != "the "+tt.step+" step could not be reached" ||
				strings.Join(st.Compensate, ",") != strings.Join(tt.stack, ",") || st.Version != before.Version+1 {
				t.Fatalf("saga %+v", st)
			}
			if dls := e.deadLetters(); len(dls) != 1 || dls[0].Handling != ops.HandlingFailed ||
				!strings.Contains(dls[0].Reason, sent.Type()+" could not be delivered to http://"+tt.step+".saga") {
				t.Fatalf("dead letters %+v", dls)
			}
			// redelivered: the same failure event again, nothing moves
			if _, err := sink.Handle(context.Background(), dl); err != nil {
				t.Fatal(err)
			}
			if pub := e.sink.Events(); len(pub) != 2 || !same(pub[1], f) {
				t.Fatalf("redelivered: published %v", e.sink.Types())
			}
			e.unchanged("s1", st)
			if n := len(e.deadLetters()); n != 1 {
				t.Fatalf("%d dead letters, want 1", n)
			}
			// the failure event compensates the saga
			e.choreograph(tt.def, f)
			if st := e.get("s1"); st.Status != saga.StatusCompensated {
				t.Fatalf("after the failure event: %s %v", st.Status, sagatest.Outcomes(st))
			}
		})
	}
}

// TestDeadLetteredStartOfAcceptedSagaRejectsIt: an order accepted with 202
// whose start command could not be delivered ends rejected (compensated,
// nothing to undo) rather than staying accepted; the start, arriving
// late after all, changes nothing.
func TestDeadLetteredStartOfAcceptedSagaRejectsIt(t *testing.T) {
	for _, def := range []*saga.Definition{o.Saga, abc} {
		t.Run(def.Name, func(t *testing.T) {
			e := newEnv(t)
			sink := e.deadLetterSink()
			cmd := start(def, "s1")
			if _, err := e.op.Accept(context.Background(), def, "s1", "order-1", &cmd); err != nil {
				t.Fatal(err)
			}
			dl := deadLettered(cmd, "http://order.saga.svc.cluster.local", "503", "")
			if got, err := sink.Handle(context.Background(), dl); got != nil || err != nil {
				t.Fatalf("%v %v", got, err)
			}
			st := e.get("s1")
			s0 := def.Steps[0]
			if st.Status != saga.StatusCompensated || st.FailedStep != s0.Name || st.Reason != "the "+s0.Name+" step could not be reached" {
				t.Fatalf("saga %+v", st)
			}
			if pub := e.sink.Events(); len(pub) != 1 || pub[0].Type() != s0.Failed || version(t, pub[0]) != st.Version {
				t.Fatalf("published %v", pub)
			}
			if dls := e.deadLetters(); len(dls) != 1 || dls[0].Handling != ops.HandlingFailed {
				t.Fatalf("dead letters %+v", dls)
			}
			// the start, delivered late after all, is a duplicate of the
			// dead letter: it gets the same failure event, nothing runs
			if got, err := e.steps(def, nil).Handle(context.Background(), cmd); err != nil || got == nil || !same(*got, e.sink.Events()[0]) {
				t.Fatalf("the late start: %v %v", got, err)
			}
			e.unchanged("s1", st)
		})
	}
}

// TestDeadLetterOfStepThatRanRepublishesItsReply: the step handled the
// event, but its answer was lost and the retries failed; the sink
// publishes the step's stored reply, so the saga goes on, and only keeps
// the dead letter.
func TestDeadLetterOfStepThatRanRepublishesItsReply(t *testing.T) {
	e := newEnv(t)
	sink := e.deadLetterSink()
	sent := e.abc.Run("s1", order, "t.a.done")
	reply, err := e.steps(abc, nil).Handle(context.Background(), sent)
	if err != nil || reply == nil {
		t.Fatalf("step b: %v %v", reply, err)
	}
	before := e.get("s1")
	dl := deadLettered(sent, "http://b.saga.svc.cluster.local", "504", "")
	if got, err := sink.Handle(context.Background(), dl); got != nil || err != nil {
		t.Fatalf("%v %v", got, err)
	}
	if pub := e.sink.Events(); len(pub) != 1 || !same(pub[0], *reply) {
		t.Fatalf("published %v, want the stored %s", e.sink.Types(), reply.Type())
	}
	e.unchanged("s1", before)
	if dls := e.deadLetters(); len(dls) != 1 || dls[0].Handling != ops.HandlingKept {
		t.Fatalf("dead letters %+v", dls)
	}
}

// TestDeadLettersOnlyKept: a dead letter that no saga waits on is kept
// for operators, once, and changes nothing.
func TestDeadLettersOnlyKept(t *testing.T) {
	tests := []struct {
		name string
		dl   func(e *env) event.Event
	}{
		{"of a saga that moved on", func(e *env) event.Event {
			// aborted while payment.authorized was retrying: the abort's
			// failure event must stay valid at the saga's version
			sent := e.order.Run("s1", order, o.PayAuthorized)
			if _, err := e.op.Abort(context.Background(), "s1", ops.CauseCancel, "alice", func(string) string { return "cancelled" }); err != nil {
				e.t.Fatal(err)
			}
			return sent
		}},
		{"of an unknown saga", func(e *env) event.Event {
			return withVersion(sagatest.Event("x1", "t.a.done", order, saga.ExtCorrelationID, "ghost"), 1)
		}},
		{"without a saga id", func(e *env) event.Event {
			sent := e.abc.Run("s1", order, "t.a.done")
			sent.SetExtension(saga.ExtCorrelationID, nil)
			return sent
		}},
		{"with a malformed sagaversion", func(e *env) event.Event {
			sent := e.abc.Run("s1", order, "t.a.done")
			sent.SetExtension(saga.ExtSagaVersion, "v2")
			return sent
		}},
		{"outside any saga", func(e *env) event.Event {
			return sagatest.Event("x1", "com.example.other", map[string]int{"a": 1}, saga.ExtCorrelationID, "s1")
		}},
		{"of a saga's terminal event", func(e *env) event.Event {
			done := e.abc.Run("s1", order, "t.f.done")
			cmd, err := ops.NewOrchestrator(e.sagas, e.store, orchestratorSource, nil).Handle(context.Background(), done)
			if err != nil || cmd == nil || cmd.Type() != "t.abc.completed" {
				e.t.Fatalf("orchestrator: %v %v", cmd, err)
			}
			return *cmd
		}},
		{"of the final step", func(e *env) event.Event { return e.abc.Run("s1", order, "t.c.done") }},
		{"of a start that ran", func(e *env) event.Event {
			e.abc.Run("s1", order, "t.a.done")
			return start(abc, "s1")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sink := e.deadLetterSink()
			dl := deadLettered(tt.dl(e), "http://somewhere.saga.svc.cluster.local", "502", "")
			published := len(e.sink.Events())
			before, exists := e.store.Get(context.Background(), "s1")
			for i := range 2 { // redelivered: kept once
				if got, err := sink.Handle(context.Background(), dl); got != nil || err != nil {
					t.Fatalf("delivery %d: %v %v", i+1, got, err)
				}
			}
			if exists == nil {
				e.unchanged("s1", before)
			}
			if got := e.sink.Events(); len(got) != published {
				t.Fatalf("published %v", e.sink.Types())
			}
			dls := e.deadLetters()
			if len(dls) != 1 || dls[0].Handling != ops.HandlingKept || dls[0].EventID != dl.ID() || dls[0].Code != "502" {
				t.Fatalf("dead letters %+v", dls)
			}
			if _, err := e.store.Get(context.Background(), "ghost"); !errors.Is(err, saga.ErrNotFound) {
				t.Fatalf("a dead letter created a saga: %v", err)
			}
		})
	}
}

// TestAbortedSagaGoesOnAfterLateDeadLetter: the abort's failure event,
// published at the saga's version, still compensates the saga after a
// late dead letter of the event it replaced.
func TestAbortedSagaGoesOnAfterLateDeadLetter(t *testing.T) {
	e := newEnv(t)
	sink := e.deadLetterSink()
	sent := e.abc.Run("s1", order, "t.a.done")
	ab, err := e.op.Abort(context.Background(), "s1", ops.CauseCancel, "alice", func(string) string { return "cancelled" })
	if err != nil || !ab.Applied {
		t.Fatalf("%+v %v", ab, err)
	}
	if _, err := sink.Handle(context.Background(), deadLettered(sent, "http://b", "503", "")); err != nil {
		t.Fatal(err)
	}
	failure := e.sink.Events()[0]
	e.choreograph(abc, failure)
	if st := e.get("s1"); st.Status != saga.StatusCompensated {
		t.Fatalf("%s %v", st.Status, sagatest.Outcomes(st))
	}
}

// movingStore moves a saga once, between a reader's read and its change,
// as a sweeper replica aborting it would.
type movingStore struct {
	saga.Store
	move func()
}

func (m *movingStore) Apply(ctx context.Context, c saga.Change) (saga.Result, error) {
	if move := m.move; move != nil {
		m.move = nil
		move()
	}
	return m.Store.Apply(ctx, c)
}

// TestDeadLetterDecidedAgainWhenTheSagaMoves: the saga moves between the
// sink's read and its compare-and-set; the dead letter is decided again
// on a fresh read (now only kept), never acknowledged unrecorded.
func TestDeadLetterDecidedAgainWhenTheSagaMoves(t *testing.T) {
	e := newEnv(t)
	sent := e.abc.Run("s1", order, "t.a.done")
	own := &recorder{}
	op := *e.op
	op.Sink = own
	op.Store = &movingStore{Store: e.store, move: func() {
		if _, err := e.op.Abort(context.Background(), "s1", ops.CauseDeadline, "", func(string) string { return "late" }); err != nil {
			t.Error(err)
		}
	}}
	sink, err := ops.NewDeadLetters(&op)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Handle(context.Background(), deadLettered(sent, "http://b", "503", "")); err != nil {
		t.Fatal(err)
	}
	st := e.get("s1")
	if last := st.Steps[len(st.Steps)-1]; last.Outcome != ops.CauseDeadline.Outcome || st.Reason != "late" {
		t.Fatalf("saga %+v", st)
	}
	if dls := e.deadLetters(); len(dls) != 1 || dls[0].Handling != ops.HandlingKept || len(own.Events()) != 0 {
		t.Fatalf("dead letters %+v, the sink published %v", dls, own.Types())
	}
}

func TestDeadLettersNeedASink(t *testing.T) {
	e := newEnv(t)
	op := *e.op
	op.Sink = nil
	if _, err := ops.NewDeadLetters(&op); !errors.Is(err, ops.ErrNoSink) {
		t.Fatalf("%v, want ErrNoSink", err)
	}
	d := e.deadLetterSink()
	for ty, want := range map[string]bool{"t.a.done": true, "t.a.undo": true, o.Create: true, "t.abc.completed": true, "com.example.other": false} {
		if d.Handles(ty) != want {
			t.Errorf("Handles(%s) = %v", ty, !want)
		}
	}
}

// TestDeadLetterOfStepThatRanMeanwhileIsKept: the step handles the very
// event the Broker dead-lettered (a late retry that succeeded) between the
// sink's read and its change, whose dedupe then answers a duplicate: the
// dead letter is still kept for operators, the step's reply published
// again, and the saga moves no further.
func TestDeadLetterOfStepThatRanMeanwhileIsKept(t *testing.T) {
	e := newEnv(t)
	sent := e.abc.Run("s1", order, "t.a.done")
	var reply *event.Event
	op := *e.op
	op.Store = &movingStore{Store: e.store, move: func() {
		var err error
		if reply, err = e.steps(abc, nil).Handle(context.Background(), sent); err != nil || reply == nil {
			t.Errorf("step b: %v %v", reply, err)
		}
	}}
	sink, err := ops.NewDeadLetters(&op)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Handle(context.Background(), deadLettered(sent, "http://b.saga.svc.cluster.local", "504", "")); err != nil {
		t.Fatal(err)
	}
	if reply == nil {
		t.FailNow()
	}
	st := e.get("s1")
	if st.Status != saga.StatusRunning || st.Steps[len(st.Steps)-1].Step != "b" || st.Steps[len(st.Steps)-1].Outcome != "done" {
		t.Fatalf("saga %+v", st)
	}
	if pub := e.sink.Events(); len(pub) != 1 || !same(pub[0], *reply) {
		t.Fatalf("published %v, want the stored %s", e.sink.Types(), reply.Type())
	}
	if dls := e.deadLetters(); len(dls) != 1 || dls[0].Handling != ops.HandlingKept || dls[0].EventID != sent.ID() {
		t.Fatalf("dead letters %+v, want the dead-lettered %s kept", dls, sent.ID())
	}
}
