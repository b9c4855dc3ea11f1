package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/ops"
	o "github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

func because(why string) func(string) string {
	return func(step string) string { return why + " at " + step }
}

// TestAbort: a running or accepted saga is failed at the step it waits
// on, with that step's failure event published; aborting it again for the
// same cause sends the same event again while nothing has moved, and
// nothing once the saga has moved on.
func TestAbort(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.abc.Run("s1", order, "t.a.done")
	before := e.get("s1")
	ab, err := e.op.Abort(ctx, "s1", ops.CauseCancel, "alice", because("cancelled by alice"))
	if err != nil || !ab.Applied || ab.Step != "b" || ab.Event == nil || ab.Event.Type != "t.b.failed" {
		t.Fatalf("%+v %v", ab, err)
	}
	st := e.get("s1")
	last := st.Steps[len(st.Steps)-1]
	if st.Status != saga.StatusCompensating || st.Version != before.Version+1 || st.Reason != "cancelled by alice at b" || st.FailedStep != "b" ||
		last.Step != "b" || last.Outcome != ops.CauseCancel.Outcome || last.Actor != "alice" || last.EventType != ops.CauseCancel.Type {
		t.Fatalf("saga %+v", st)
	}
	pub := e.sink.Events()
	if len(pub) != 1 || pub[0].Type() != "t.b.failed" || pub[0].ID() != ab.Event.ID || version(t, pub[0]) != st.Version {
		t.Fatalf("published %v", pub)
	}
	// again, nothing moved: the same event again (it may have been lost)
	again, err := e.op.Abort(ctx, "s1", ops.CauseCancel, "alice", because("cancelled again"))
	if err != nil || again.Applied || again.Event == nil || again.Event.ID != ab.Event.ID || again.Step != "b" {
		t.Fatalf("again: %+v %v", again, err)
	}
	if pub := e.sink.Events(); len(pub) != 2 || !same(pub[1], pub[0]) {
		t.Fatalf("again: published %v", e.sink.Types())
	}
	e.unchanged("s1", st)
	// the failure event compensates the saga; a cancel after that is
	// acknowledged, nothing sent
	e.choreograph(abc, pub[0])
	done := e.get("s1")
	if done.Status != saga.StatusCompensated {
		t.Fatalf("%s %v", done.Status, sagatest.Outcomes(done))
	}
	later, err := e.op.Abort(ctx, "s1", ops.CauseCancel, "alice", because("cancelled once more"))
	if err != nil || later.Applied || len(e.sink.Events()) != 2 {
		t.Fatalf("after it moved: %+v %v, published %v", later, err, e.sink.Types())
	}
	e.unchanged("s1", done)
	// another cause finds it ended
	if _, err := e.op.Abort(ctx, "s1", ops.CauseAbort, "bob", because("aborted")); !errors.Is(err, ops.ErrConflict) {
		t.Fatalf("another cause: %v, want ErrConflict", err)
	}

	// accepted: rejected at once, nothing to undo
	e.accept(abc, "s2")
	ab, err = e.op.Abort(ctx, "s2", ops.CauseCancel, "alice", because("cancelled"))
	if err != nil || !ab.Applied || ab.Step != "a" || ab.Event == nil || ab.Event.Type != "t.a.failed" {
		t.Fatalf("accepted: %+v %v", ab, err)
	}
	if st := e.get("s2"); st.Status != saga.StatusCompensated || st.Reason != "cancelled at a" {
		t.Fatalf("accepted: %+v", st)
	}
	if _, err := e.op.Abort(ctx, "ghost", ops.CauseCancel, "alice", because("x")); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("unknown saga: %v", err)
	}
}

// TestAbortConflicts: a saga that is compensating, has ended or whose
// compensation failed, and was not aborted for this cause, cannot be
// aborted (the API answers 409): cancelling an order that has already
// been compensated is a conflict, not a success.
func TestAbortConflicts(t *testing.T) {
	tests := []struct {
		name string
		seed func(e *env)
	}{
		{"compensating", func(e *env) { e.abc.Run("s1", order, "t.c.failed", sagatest.Fail("c", "no room")) }},
		{"completed", func(e *env) { e.abc.Run("s1", order, "t.c.done") }},
		{"compensated", func(e *env) { e.abc.Run("s1", order, "t.a.undone", sagatest.Fail("b", "no")) }},
		{"rejected", func(e *env) { e.abc.Run("s1", order, "t.a.failed", sagatest.Fail("a", "no")) }},
		{"an order compensated after its payment failed", func(e *env) {
			e.order.Run("s1", order, o.Cancelled, sagatest.Fail(o.StepPayment, "insufficient funds"))
		}},
		{"compensation failed", func(e *env) {
			sent := e.abc.Run("s1", order, "t.c.failed", sagatest.Fail("c", "no room"))
			if _, err := e.deadLetterSink().Handle(context.Background(), deadLettered(sent, "http://b", "503", "")); err != nil {
				e.t.Fatal(err)
			}
		}},
		{"aborted for another cause", func(e *env) {
			e.abc.Run("s1", order, "t.a.done")
			if _, err := e.op.Abort(context.Background(), "s1", ops.CauseDeadline, "", because("late")); err != nil {
				e.t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tt.seed(e)
			before := e.get("s1")
			published := len(e.sink.Events())
			ab, err := e.op.Abort(context.Background(), "s1", ops.CauseCancel, "alice", because("cancelled"))
			if !errors.Is(err, ops.ErrConflict) || ab.Applied {
				t.Fatalf("%+v %v, want ErrConflict", ab, err)
			}
			if !strings.Contains(err.Error(), string(before.Status)) {
				t.Errorf("the conflict %q does not say the saga is %s", err, before.Status)
			}
			e.unchanged("s1", before)
			if len(e.sink.Events()) != published {
				t.Fatalf("published %v", e.sink.Types())
			}
		})
	}
}

// failCompensation walks saga id of def until it compensates after a
// business failure of step failing, and dead-letters the compensation's
// event: the saga's compensation fails. It returns the dead-lettered
// event.
func (e *env) failCompensation(k *sagatest.Kit, id, awaited, failing, reason string) event.Event {
	e.t.Helper()
	sent := k.Run(id, order, awaited, sagatest.Fail(failing, reason))
	if _, err := e.deadLetterSink().Handle(context.Background(), deadLettered(sent, "http://down", "503", "refused")); err != nil {
		e.t.Fatal(err)
	}
	if st := e.get(id); st.Status != saga.StatusCompensationFailed {
		e.t.Fatalf("saga %s is %s", id, st.Status)
	}
	return sent
}

// TestRedrive: a saga whose compensation failed is put back to
// compensating and the event its compensation could not get is published
// again; its reason and failed step are again the business failure's, not
// the dead letter's. A repeated redrive sends the same event while nothing
// has moved.
func TestRedrive(t *testing.T) {
	tests := []struct {
		name       string
		kit        func(e *env) *sagatest.Kit
		awaited    string
		failing    string
		reason     string
		compensate string // the step whose compensation failed
	}{
		{"abc", func(e *env) *sagatest.Kit { return e.abc }, "t.c.failed", "c", "no room", "b"},
		{"order out of stock", func(e *env) *sagatest.Kit { return e.order }, o.StockFailed, o.StepInventory, "out of stock", o.StepPayment},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			k := tt.kit(e)
			sent := e.failCompensation(k, "s1", tt.awaited, tt.failing, tt.reason)
			failed := e.get("s1")
			if failed.FailedStep != tt.compensate || !strings.Contains(failed.Reason, "could not be delivered") {
				t.Fatalf("compensation failed: %+v", failed)
			}
			r, err := e.op.Redrive(ctx, "s1", "bob")
			if err != nil || r == nil || r.Type != sent.Type() {
				t.Fatalf("%+v %v", r, err)
			}
			st := e.get("s1")
			last := st.Steps[len(st.Steps)-1]
			if st.Status != saga.StatusCompensating || st.Reason != tt.reason || st.FailedStep != tt.failing || st.Version != failed.Version+1 ||
				last.Outcome != ops.OutcomeRedriven || last.Step != tt.compensate || last.Actor != "bob" {
				t.Fatalf("redriven: reason %q failed_step %q %+v", st.Reason, st.FailedStep, st)
			}
			pub := e.sink.Events()
			if len(pub) != 1 || pub[0].Type() != sent.Type() || pub[0].ID() != r.ID || version(t, pub[0]) != st.Version || pub[0].Source() != opsSource {
				t.Fatalf("published %v", pub)
			}
			again, err := e.op.Redrive(ctx, "s1", "bob")
			if err != nil || again == nil || again.ID != r.ID {
				t.Fatalf("again: %+v %v", again, err)
			}
			if pub := e.sink.Events(); len(pub) != 2 || !same(pub[1], pub[0]) {
				t.Fatalf("again: published %v", e.sink.Types())
			}
			e.unchanged("s1", st)
			// the compensation resumes where it stopped
			e.choreograph(k.Def, pub[0])
			done := e.get("s1")
			if done.Status != saga.StatusCompensated || done.Reason != tt.reason || done.FailedStep != tt.failing {
				t.Fatalf("after the redrive: %s %q %q %v", done.Status, done.Reason, done.FailedStep, sagatest.Outcomes(done))
			}
			// a redrive now sends nothing
			if _, err := e.op.Redrive(ctx, "s1", "bob"); !errors.Is(err, ops.ErrConflict) || len(e.sink.Events()) != 2 {
				t.Fatalf("after it moved: %v, published %v", err, e.sink.Types())
			}
		})
	}
}

// TestRedriveTwice: a redriven compensation that fails again is redriven
// with a new event; the business failure stays the saga's reason.
func TestRedriveTwice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.failCompensation(e.abc, "s1", "t.c.failed", "c", "no room")
	first, err := e.op.Redrive(ctx, "s1", "bob")
	if err != nil {
		t.Fatal(err)
	}
	redriven := e.sink.Events()[0]
	if _, err := e.deadLetterSink().Handle(ctx, deadLettered(redriven, "http://down", "503", "again")); err != nil {
		t.Fatal(err)
	}
	if st := e.get("s1"); st.Status != saga.StatusCompensationFailed || !strings.Contains(st.Reason, "again") {
		t.Fatalf("second failure: %+v", st)
	}
	second, err := e.op.Redrive(ctx, "s1", "carol")
	if err != nil || second.ID == first.ID || second.Type != "t.c.failed" {
		t.Fatalf("second redrive %+v (first %+v) %v", second, first, err)
	}
	if st := e.get("s1"); st.Status != saga.StatusCompensating || st.Reason != "no room" || st.FailedStep != "c" {
		t.Fatalf("%+v", st)
	}
	e.choreograph(abc, e.sink.Events()[1])
	if st := e.get("s1"); st.Status != saga.StatusCompensated {
		t.Fatalf("%s %v", st.Status, sagatest.Outcomes(st))
	}
}

// TestRedriveInOrchestration: the redriven event is the compensation
// command the orchestrator had sent; the step undoes on it.
func TestRedriveInOrchestration(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	orch := ops.NewOrchestrator(e.sagas, e.store, orchestratorSource, nil)
	failedC := e.abc.Run("s1", order, "t.c.failed", sagatest.Fail("c", "no room"))
	undo, err := orch.Handle(ctx, failedC)
	if err != nil || undo == nil {
		t.Fatal(undo, err)
	}
	if _, err := e.deadLetterSink().Handle(ctx, deadLettered(*undo, "http://b", "503", "")); err != nil {
		t.Fatal(err)
	}
	r, err := e.op.Redrive(ctx, "s1", "bob")
	if err != nil || r.Type != "t.b.undo" {
		t.Fatalf("%+v %v", r, err)
	}
	undone, err := e.steps(abc, nil).Handle(ctx, e.sink.Events()[0])
	if err != nil || undone == nil || undone.Type() != "t.b.undone" {
		t.Fatalf("step b on the redriven command: %v %v", undone, err)
	}
	next, err := orch.Handle(ctx, *undone)
	if err != nil || next == nil || next.Type() != "t.a.undo" {
		t.Fatalf("orchestrator: %v %v", next, err)
	}
}

func TestRedriveConflicts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.abc.Run("running", order, "t.a.done")
	e.abc.Run("compensating", order, "t.c.failed", sagatest.Fail("c", "no"))
	e.abc.Run("completed", order, "t.c.done")
	for _, id := range []string{"running", "compensating", "completed"} {
		before := e.get(id)
		if _, err := e.op.Redrive(ctx, id, "bob"); !errors.Is(err, ops.ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", id, err)
		}
		e.unchanged(id, before)
	}
	if _, err := e.op.Redrive(ctx, "ghost", "bob"); !errors.Is(err, saga.ErrNotFound) {
		t.Errorf("unknown saga: %v", err)
	}
	if n := len(e.sink.Events()); n != 0 {
		t.Fatalf("published %v", e.sink.Types())
	}
}

// TestAcceptAndWithdraw: an accepted saga is recorded before its start
// command is sent, bound to that very command; withdrawing it rejects it
// unless its start has run.
func TestAcceptAndWithdraw(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cmd := start(o.Saga, "s1")
	res, err := e.op.Accept(ctx, o.Saga, "s1", "order-1", &cmd)
	if err != nil || !res.Applied || res.Status != saga.StatusAccepted {
		t.Fatalf("%+v %v", res, err)
	}
	st := e.get("s1")
	if version(t, cmd) != st.Version || st.Key != "order-1" || st.Saga != o.Saga.Name || !saga.SameJSON(st.Data, cmd.Data()) ||
		st.Next == nil || st.Next.ID != cmd.ID() || st.Next.Type != cmd.Type() || st.Next.Source != cmd.Source() {
		t.Fatalf("accepted %+v next %+v", st, st.Next)
	}
	if id, err := e.store.ByKey(ctx, o.Saga.Name, "order-1"); err != nil || id != "s1" {
		t.Fatalf("by key: %q %v", id, err)
	}
	again := start(o.Saga, "s1")
	if res, err := e.op.Accept(ctx, o.Saga, "s1", "order-1", &again); err != nil || !res.Duplicate {
		t.Fatalf("accepted again: %+v %v", res, err)
	}
	other := start(o.Saga, "s1")
	other.SetID("another-command")
	if res, err := e.op.Accept(ctx, o.Saga, "s1", "order-1", &other); err != nil || res.Skipped != "exists" {
		t.Fatalf("another command for the saga: %+v %v", res, err)
	}
	wrong := start(abc, "s9")
	if _, err := e.op.Accept(ctx, o.Saga, "s9", "", &wrong); err == nil {
		t.Fatal("accepted a command that does not start the saga")
	}
	// the start must be the accepted command: other data is refused
	forged := cmd.Clone()
	_ = forged.SetData(event.ApplicationJSON, map[string]any{"order_id": "o-1", "user_id": 7, "items": []map[string]any{{"sku": "car", "qty": 1}}})
	if _, err := e.steps(o.Saga, nil).Handle(ctx, forged); !saga.IsSecurity(err) {
		t.Fatalf("a start with other data: %v, want a security refusal", err)
	}
	e.unchanged("s1", st)

	// withdrawn: rejected with the reason
	if ok, err := e.op.Withdraw(ctx, "s1", "the broker did not take it"); !ok || err != nil {
		t.Fatalf("withdraw: %v %v", ok, err)
	}
	withdrawn := e.get("s1")
	if withdrawn.Status != saga.StatusCompensated || withdrawn.Reason != "the broker did not take it" {
		t.Fatalf("withdrawn: %+v", withdrawn)
	}
	// a repeated withdrawal (a retried request) reports it withdrawn: it
	// does not go on
	if ok, err := e.op.Withdraw(ctx, "s1", "again"); !ok || err != nil {
		t.Fatalf("withdraw again: %v %v", ok, err)
	}
	e.unchanged("s1", withdrawn)
	if len(e.sink.Events()) != 0 {
		t.Fatalf("withdraw published %v", e.sink.Types())
	}
	if got, err := e.steps(o.Saga, nil).Handle(ctx, cmd); got != nil || err != nil {
		t.Fatalf("the start after the withdrawal: %v %v", got, err)
	}

	// the start ran after all (an ambiguous publish failure): not withdrawn
	cmd2 := e.accept(o.Saga, "s2")
	if reply, err := e.steps(o.Saga, nil).Handle(ctx, cmd2); err != nil || reply == nil || reply.Type() != o.Created {
		t.Fatalf("start: %v %v", reply, err)
	}
	running := e.get("s2")
	if ok, err := e.op.Withdraw(ctx, "s2", "x"); ok || err != nil {
		t.Fatalf("withdraw after the start ran: %v %v, want false", ok, err)
	}
	e.unchanged("s2", running)
	if _, err := e.op.Withdraw(ctx, "ghost", "x"); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("unknown saga: %v", err)
	}
}

// TestReplay: a kept dead letter is published again as first sent, its
// replay recorded on it and noted in its saga's history with the actor,
// without moving the saga.
func TestReplay(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sent := e.failCompensation(e.abc, "s1", "t.c.failed", "c", "no room")
	dls := e.deadLetters()
	if len(dls) != 1 {
		t.Fatalf("%d dead letters", len(dls))
	}
	before := e.get("s1")

	e.sink.down.Store(true)
	if _, err := e.op.Replay(ctx, dls[0].ID, "carol"); saga.StatusCode(err) != 503 {
		t.Fatalf("broker down: %v", err)
	}
	if d, _ := e.store.DeadLetter(ctx, dls[0].ID); d.ReplayedBy != "" {
		t.Fatalf("marked replayed though it was not published: %+v", d)
	}
	e.sink.down.Store(false)

	from := e.now()
	got, err := e.op.Replay(ctx, dls[0].ID, "carol")
	if err != nil || got.ReplayedBy != "carol" || got.ReplayedAt.Before(from.Add(-time.Millisecond)) {
		t.Fatalf("%+v %v", got, err)
	}
	pub := e.sink.Events()
	if len(pub) != 1 || !same(pub[0], sent) {
		t.Fatalf("published %v, want %v", pub, sent)
	}
	for _, x := range []string{ops.ExtErrorDest, ops.ExtErrorCode, ops.ExtErrorData} {
		if _, ok := pub[0].Extensions()[x]; ok {
			t.Fatalf("the replayed event carries %s", x)
		}
	}
	d, err := e.store.DeadLetter(ctx, dls[0].ID)
	if err != nil || d.ReplayedBy != "carol" || d.ReplayedAt.IsZero() {
		t.Fatalf("dead letter %+v %v", d, err)
	}
	st := e.get("s1")
	note := st.Steps[len(st.Steps)-1]
	if st.Version != before.Version || st.Status != before.Status || len(st.Steps) != len(before.Steps)+1 ||
		!note.Note || note.Outcome != ops.OutcomeReplayed || note.Actor != "carol" || note.EventID != sent.ID() ||
		note.Reason != "dead letter "+dls[0].ID || note.Version != before.Version {
		t.Fatalf("saga v%d %s, note %+v", st.Version, st.Status, note)
	}
	// a note is no step: the redrive still finds the failed compensation
	if _, err := e.op.Redrive(ctx, "s1", "bob"); err != nil {
		t.Fatalf("redrive after a replay: %v", err)
	}

	// a dead letter of no saga: published, nothing noted
	if _, err := e.deadLetterSink().Handle(ctx, deadLettered(sagatest.Event("x1", "com.example.other", map[string]int{"a": 1}), "http://x", "400", "")); err != nil {
		t.Fatal(err)
	}
	other := e.deadLetters()[0]
	if _, err := e.op.Replay(ctx, other.ID, "carol"); err != nil {
		t.Fatal(err)
	}
	if last := e.sink.Events(); last[len(last)-1].Type() != "com.example.other" {
		t.Fatalf("published %v", e.sink.Types())
	}
	for _, id := range []string{"0-1", "not-an-id"} {
		if _, err := e.op.Replay(ctx, id, "carol"); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("replay %s: %v, want ErrNotFound", id, err)
		}
	}
}

// TestRegistry: definitions must be valid, named once, and own their
// event types alone; KSAGA_SAGAS configures them.
func TestRegistry(t *testing.T) {
	clone := *abc
	clone.Name = "abc2"
	invalid := *abc
	invalid.Name = "Not A Name"
	for name, defs := range map[string][]*saga.Definition{
		"twice":           {abc, abc},
		"shared types":    {abc, &clone},
		"invalid":         {&invalid},
		"no definitions":  {},
		"one bad of many": {o.Saga, &invalid},
	} {
		if _, err := ops.NewRegistry(defs...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}

	if _, err := ops.RegistryFromEnv(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), ops.EnvSagas) {
		t.Errorf("unset: %v", err)
	}
	if _, err := ops.RegistryFromEnv(func(string) string { return `[{"name":"x"}]` }); err == nil {
		t.Error("an invalid definition was accepted")
	}
	raw, err := json.Marshal([]*saga.Definition{o.Saga, abc})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ops.RegistryFromEnv(func(k string) string {
		if k == ops.EnvSagas {
			return string(raw)
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Names(), []string{"abc", "order"}) || len(r.Definitions()) != 2 || r.Definitions()[1].Name != "order" {
		t.Fatalf("names %v", r.Names())
	}
	if d, route, ok := r.Route(o.StockFailed); !ok || d.Name != "order" || route.Kind != saga.Compensate || route.Command != o.RefundPay {
		t.Fatalf("route: %v %+v %v", d, route, ok)
	}
	if d, ok := r.Owner("t.abc.completed"); !ok || d.Name != "abc" {
		t.Fatalf("owner: %v %v", d, ok)
	}
	if _, ok := r.Owner("com.example.other"); ok {
		t.Fatal("owner of a foreign type")
	}
}
